// Measures a rendered page of the book for tests/test_book_site.py, which injects this
// script into the page and reads the result from the DOM Chromium dumps: a
// <script id="prostseg-measurements" type="application/json"> element appended to <body>.
//
// Measured, in the article column only (not the navigation):
// - every image shown: its natural and displayed width and the text record that
//   prostseg.figure_png writes into PNGs (keyword "prostseg:smallest-text"), and whether
//   matplotlib made it (its "Software" text chunk);
// - every code cell, output block and table wider than the column or scrolling sideways;
// - how many characters a code cell and an output show on one line.
(function () {
  "use strict";

  function latin1(bytes) {
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return text;
  }

  // The tEXt and uncompressed iTXt chunks of a PNG, as {keyword: text}.
  function pngText(bytes) {
    const chunks = {};
    const signature = [137, 80, 78, 71, 13, 10, 26, 10];
    if (bytes.length < 8 || signature.some((value, i) => bytes[i] !== value)) return null;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 8; at + 8 <= bytes.length; ) {
      const length = view.getUint32(at);
      const type = latin1(bytes.subarray(at + 4, at + 8));
      const data = bytes.subarray(at + 8, at + 8 + length);
      const end = data.indexOf(0);
      if (type === "tEXt" && end > 0) {
        chunks[latin1(data.subarray(0, end))] = latin1(data.subarray(end + 1));
      } else if (type === "iTXt" && end > 0 && data[end + 1] === 0) {
        const language = data.indexOf(0, end + 3);
        const translated = data.indexOf(0, language + 1);
        chunks[latin1(data.subarray(0, end))] = new TextDecoder().decode(data.subarray(translated + 1));
      } else if (type === "IEND") {
        break;
      }
      at += 12 + length;
    }
    return chunks;
  }

  function snippet(element) {
    return (element.textContent || element.getAttribute("alt") || "").replace(/\s+/g, " ").trim().slice(0, 70);
  }

  function kind(element) {
    if (element.closest(".cell_input")) return "code cell";
    if (element.closest(".cell_output")) return element.tagName === "TABLE" ? "output table" : "output";
    return element.tagName === "TABLE" ? "table" : "code block";
  }

  async function measureImages(column) {
    const images = [];
    for (const image of column.querySelectorAll("img")) {
      const shown = image.getBoundingClientRect().width;
      if (!shown || !image.naturalWidth) continue; // hidden: another slice of a slice browser
      let chunks = null;
      try {
        chunks = pngText(new Uint8Array(await (await fetch(image.currentSrc || image.src)).arrayBuffer()));
      } catch (error) {
        chunks = null;
      }
      const source = image.getAttribute("src") || "";
      images.push({
        src: source.startsWith("data:") || source.startsWith("blob:") ? source.slice(0, 40) : source,
        widget: Boolean(image.closest(".widget-subarea, .jupyter-widgets")),
        natural_width: image.naturalWidth,
        shown_width: shown,
        png: chunks !== null,
        software: chunks ? chunks.Software || null : null,
        record: chunks ? chunks["prostseg:smallest-text"] || null : null,
      });
    }
    return images;
  }

  function measureOverflow(column) {
    const limit = column.getBoundingClientRect().right + 1;
    const overflowing = [];
    const boxes = column.querySelectorAll(".cell_input pre, .cell_output pre, div.highlight pre, table");
    for (const box of boxes) {
      const rect = box.getBoundingClientRect();
      if (!rect.width) continue;
      const scrolls = box.scrollWidth > box.clientWidth + 1;
      const container = box.tagName === "TABLE" ? box.parentElement : null;
      const cut = container && container.scrollWidth > container.clientWidth + 1;
      if (scrolls || cut || rect.right > limit) {
        overflowing.push({ kind: kind(box), width: Math.max(box.scrollWidth, rect.width), text: snippet(box) });
      }
    }
    return overflowing;
  }

  // Characters one line of the first box matching `selector` shows (code cells scroll
  // sideways beyond, outputs wrap).
  function characterColumns(column, selector) {
    const pre = column.querySelector(selector);
    if (!pre) return null;
    const style = getComputedStyle(pre);
    const probe = document.createElement("span");
    probe.style.font = style.font;
    probe.style.whiteSpace = "pre";
    probe.style.visibility = "hidden";
    probe.textContent = "0".repeat(100);
    pre.appendChild(probe);
    const characterWidth = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.floor(inner / characterWidth);
  }

  function widgetsPending() {
    const hasState = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
    return hasState && !document.querySelector(".widget-subarea");
  }

  async function measure() {
    for (let waited = 0; widgetsPending() && waited < 15000; waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await new Promise((resolve) => setTimeout(resolve, 500)); // widget images decode
    const column = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    const result = {
      viewport_width: window.innerWidth,
      column_width: column.getBoundingClientRect().width,
      images: await measureImages(column),
      overflowing: measureOverflow(column),
      code_columns: characterColumns(column, ".cell_input pre"),
      output_columns: characterColumns(column, ".cell_output pre"),
    };
    const output = document.createElement("script");
    output.type = "application/json";
    output.id = "prostseg-measurements";
    output.textContent = JSON.stringify(result).replace(/</g, "\\u003c"); // nothing that would end the element
    document.body.appendChild(output);
  }

  window.addEventListener("load", () => {
    measure().catch((error) => {
      const output = document.createElement("script");
      output.type = "application/json";
      output.id = "prostseg-measurements";
      output.textContent = JSON.stringify({ error: String(error && error.stack ? error.stack : error) });
      document.body.appendChild(output);
    });
  });
})();
