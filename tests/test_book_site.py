"""Checks on the built book, as a reader would see it.

Runs against the HTML site that ``book/build.sh`` writes to ``_build/html`` (the
environment variable ``PROSTSEG_BOOK_HTML`` points elsewhere). Without a built site the
tests skip locally and fail in CI (``CI=true``), where ``.ci/run`` builds the book first.

The MathJax and widget checks load pages in headless Chromium from a loopback HTTP
server with every other host unresolvable, so they also prove that the site works offline.
The layout checks load every page the same way in a window 1280 pixels wide (a laptop), with
``book_page_measure.js`` injected to measure the figures and boxes as shown.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE_ENV = "PROSTSEG_BOOK_HTML"
CHROMIUM_ENV = "PROSTSEG_CHROMIUM"
BUILD_HINT = "build it with `book/build.sh` (or point PROSTSEG_BOOK_HTML at a built site)"
VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
TRACEBACK_PATTERN = re.compile(
    r"Traceback \(most recent call last\)|^\w*(Error|Exception): ", re.MULTILINE
)
# Raw log lines of TensorFlow, absl and CUDA: the native libraries' (C++) and the Python
# loggers' (in a notebook, TensorFlow's logs INFO and up to stdout).
LIBRARY_LOG_PATTERN = re.compile(
    r"\babsl\b"  # "All log messages before absl::InitializeLog()...", "WARNING:absl:..."
    r"|^[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]"  # I0000 00:00:1796084039.84   4952 port.cc:153]
    r"|^[A-Z]+:tensorflow:"  # INFO:tensorflow:Using MirroredStrategy with devices ...
    r"|cuInit|cudart_stub|cpu_feature_guard|oneDNN custom operations",
    re.MULTILINE,
)
#: Width of the browser window of the layout checks (CSS pixels): a laptop screen.
VIEWPORT_WIDTH = 1280
#: Smallest text of a figure, in CSS pixels as the page shows it, that a reader can read.
MIN_TEXT_PX = 9.0
MEASURE_SCRIPT = Path(__file__).with_name("book_page_measure.js")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(message: str) -> None:
    """Fail in CI, skip elsewhere."""
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Page:
    """What the checks need from one HTML page."""

    path: Path
    ids: set[str] = field(default_factory=set)
    images: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    stylesheets: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    math_elements: int = 0
    has_widget_state: bool = False
    outputs: list[str] = field(default_factory=list)
    error_outputs: list[str] = field(default_factory=list)
    unrendered_tables: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    """Collect ids, resource URLs, links, math elements and cell outputs (errors apart) of a page."""

    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        # Open elements; each entry is (classes, text so far) of an output, or None.
        self._stack: list[tuple[set[str], list[str]] | None] = []
        self._code_depth = 0  # inside <pre> or <code>: source text, not rendered prose

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        for name in ("id", "name"):
            if attributes.get(name) and (name == "id" or tag == "a"):
                self.page.ids.add(attributes[name])
        if tag == "img" and attributes.get("src"):
            self.page.images.append(attributes["src"])
        elif tag == "script":
            if attributes.get("src"):
                self.page.scripts.append(attributes["src"])
            if attributes.get("type") == "application/vnd.jupyter.widget-state+json":
                self.page.has_widget_state = True
        elif tag == "link" and attributes.get("href"):
            self.page.stylesheets.append(attributes["href"])
        elif tag == "a" and attributes.get("href") is not None:
            self.page.links.append(attributes["href"])
        if "math" in classes and tag in {"span", "div"}:
            self.page.math_elements += 1
        if tag in VOID_ELEMENTS:
            return
        if tag in {"pre", "code"}:
            self._code_depth += 1
        self._stack.append((classes, []) if "output" in classes else None)

    def handle_endtag(self, tag):
        if tag in {"pre", "code"}:
            self._code_depth = max(0, self._code_depth - 1)
        if tag in VOID_ELEMENTS or not self._stack:
            return
        collected = self._stack.pop()
        if collected is None:
            return
        classes, parts = collected
        text = "".join(parts)
        self.page.outputs.append(text)
        if {"traceback", "error"} & classes or ("stderr" in classes and TRACEBACK_PATTERN.search(text)):
            self.page.error_outputs.append(" ".join(sorted(classes)) + ": " + text[:300])

    def handle_data(self, data):
        # A table separator row; Sphinx's smart quotes turn its "---" into an em dash.
        if not self._code_depth and re.search(r"\|\s*:?(-{3,}|\u2014)", data):
            self.page.unrendered_tables.append(data.strip()[:120])
        for collected in self._stack:
            if collected is not None:
                collected[1].append(data)


@functools.cache
def _load_site(site: Path) -> dict[str, Page]:
    pages = {}
    for path in sorted(site.rglob("*.html")):
        relative = path.relative_to(site).as_posix()
        if relative.startswith(("_static/", "_sources/", "_images/")):
            continue  # theme templates and copied sources, not pages
        page = Page(path)
        parser = _PageParser(page)
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        pages[relative] = page
    return pages


@pytest.fixture(scope="module")
def site() -> Path:
    site = Path(os.environ.get(SITE_ENV) or REPO_ROOT / "_build" / "html").resolve()
    if not (site / "index.html").is_file():
        _missing(f"no built book at {site}: {BUILD_HINT}")
    return site


@pytest.fixture(scope="module")
def pages(site) -> dict[str, Page]:
    return _load_site(site)


def _toc_files(entry) -> list[str]:
    """All ``file`` and ``root`` entries of a (sub)tree of ``_toc.yml``."""
    if isinstance(entry, list):
        return [name for item in entry for name in _toc_files(item)]
    if not isinstance(entry, dict):
        return []
    names = [entry[key] for key in ("root", "file") if key in entry]
    for key in ("parts", "chapters", "sections"):
        names += _toc_files(entry.get(key, []))
    return names


def _is_remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) and parts.hostname not in LOCAL_HOSTS


def _local_target(page: Page, site: Path, url: str) -> Path | None:
    """The file a relative URL of ``page`` points to, or None for a same-page reference."""
    path = unquote(urlsplit(url).path)
    if not path:
        return None
    if path.startswith("/"):
        return site / path.lstrip("/")
    return Path(posixpath.normpath((page.path.parent / path).as_posix()))


def _page_at(pages: dict[str, Page], site: Path, path: Path) -> Page | None:
    try:
        return pages.get(path.relative_to(site).as_posix())
    except ValueError:  # outside the site
        return None


def _toc_pages() -> list[str]:
    """The HTML pages (relative to the site) of the files listed in ``_toc.yml``."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [f"{Path(name).with_suffix('').as_posix()}.html" for name in _toc_files(toc)]


def test_every_toc_page_is_built(site, pages):
    names = _toc_pages()
    assert names, "_toc.yml lists no pages"
    missing = [name for name in names if name not in pages]
    assert not missing, f"pages in _toc.yml missing from {site}: {missing}"


def test_images_are_local_files(site, pages):
    broken = []
    for name, page in pages.items():
        for src in page.images:
            if src.startswith("data:"):
                continue
            target = None if _is_remote(src) else _local_target(page, site, src)
            if target is None or not target.is_file():
                broken.append(f"{name}: {src}")
    assert not broken, f"images that are remote or missing: {broken}"


def test_scripts_and_stylesheets_are_served_locally(site, pages):
    problems = []
    for name, page in pages.items():
        for url in page.scripts + page.stylesheets:
            if url.startswith("data:"):
                continue
            if _is_remote(url):
                problems.append(f"{name}: loads {url} from another host")
                continue
            target = _local_target(page, site, url)
            if target is not None and not target.is_file():
                problems.append(f"{name}: {url} does not exist")
    assert not problems, "\n".join(problems)


def test_each_script_is_loaded_once(pages):
    # Guards the jupyter-book pitfall of adding every .js of the static folders to every
    # page (MathJax's hundreds of components would be loaded as scripts).
    problems = []
    for name, page in pages.items():
        paths = [urlsplit(url).path for url in page.scripts]
        problems += [f"{name}: {path} x{count}" for path, count in Counter(paths).items() if count > 1]
        problems += [
            f"{name}: {path}" for path in paths
            if "/mathjax/" in path and not path.endswith("/tex-mml-chtml.js")
        ]
    assert not problems, f"scripts loaded twice or MathJax internals loaded: {problems}"


def test_internal_links_resolve(site, pages):
    broken = []
    for name, page in pages.items():
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href in {"", "#"}:
                continue
            target = _local_target(page, site, href)
            if target is not None and target.is_dir():
                target = target / "index.html"
            if target is not None and not target.is_file():
                broken.append(f"{name}: {href} (no such file)")
                continue
            fragment = unquote(parts.fragment)
            if not fragment or (target is not None and target.suffix != ".html"):
                continue
            target_page = page if target is None else _page_at(pages, site, target)
            if target_page is not None and fragment not in target_page.ids:
                broken.append(f"{name}: {href} (no anchor #{fragment})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_no_error_outputs(pages):
    errors = [f"{name}: {text}" for name, page in pages.items() for text in page.error_outputs]
    assert not errors, "pages show errors or tracebacks:\n" + "\n".join(errors)


def test_no_library_log_lines_on_pages(pages):
    # The native libraries log to the kernel's file descriptor 2, which the build keeps in
    # its own log (book/ipython_kernel_config.py); Python loggers are the chapters' to quiet.
    found = []
    for name, page in pages.items():
        for text in page.outputs:
            for line in text.splitlines():
                if LIBRARY_LOG_PATTERN.search(line):
                    found.append(f"{name}: {line.strip()[:160]}")
    assert not found, "library log lines on pages:\n" + "\n".join(found)


def test_markdown_tables_are_rendered(pages):
    # A table displayed by a cell as Markdown must become an HTML table, not "| a | b |" text.
    raw = [f"{name}: {text}" for name, page in pages.items() for text in page.unrendered_tables]
    assert not raw, "Markdown tables shown as plain text:\n" + "\n".join(raw)


# ---------------------------------------------------------------------------------------
# In a browser


@pytest.fixture(scope="module")
def chromium() -> str:
    candidates = [os.environ.get(CHROMIUM_ENV), "chromium", "chromium-browser", "google-chrome"]
    for candidate in filter(None, candidates):
        found = shutil.which(candidate)
        if found:
            return found
    _missing(
        "no Chromium found (apt-get install chromium, or set PROSTSEG_CHROMIUM): "
        "needed to check that MathJax and widgets render"
    )


@pytest.fixture(scope="module")
def server_url(site):
    """Serve the site on a free loopback port for the duration of the module."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; ``page.html?measure`` serves the page with the measuring script."""

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.query != "measure" or not parts.path.endswith(".html"):
            return super().do_GET()
        page = Path(self.translate_path(parts.path))
        if not page.is_file():
            return self.send_error(404)
        script = f"<script>{MEASURE_SCRIPT.read_text(encoding='utf-8')}</script>"
        body = page.read_text(encoding="utf-8").replace("</body>", script + "</body>", 1).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _rendered_dom(chromium: str, url: str, *, width: int | None = None) -> str:
    """The DOM of ``url`` after its scripts ran, with every host but 127.0.0.1 unreachable.

    ``width``: of the browser window in CSS pixels (Chromium's default otherwise).
    """
    window = [f"--window-size={width},900"] if width else []
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                # Let deferred scripts (MathJax typesetting, widget rendering) finish.
                "--virtual-time-budget=20000",
                *window,
                "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=180, check=False,
        )
    assert result.returncode == 0, f"chromium failed on {url}:\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.mark.slow
def test_mathjax_typesets_intro_offline(chromium, server_url, pages):
    intro = pages.get("book/intro.html")
    assert intro is not None, "book/intro.html was not built"
    formulas = intro.math_elements
    assert formulas > 0, "book/intro.html has no math to typeset"
    typeset = _rendered_dom(chromium, f"{server_url}/book/intro.html").count("<mjx-container")
    assert typeset >= formulas, f"MathJax typeset {typeset} of {formulas} formulas on book/intro.html"


@pytest.mark.slow
def test_widgets_render_offline(chromium, server_url, pages):
    with_widgets = [name for name, page in pages.items() if page.has_widget_state]
    if not with_widgets:
        pytest.skip("no page of the book embeds ipywidgets state")
    for name in with_widgets:
        rendered = 'class="widget-subarea"' in _rendered_dom(chromium, f"{server_url}/{name}")
        assert rendered, f"ipywidgets did not render on {name}"


# ---------------------------------------------------------------------------------------
# Layout, measured in a browser window as wide as a laptop screen


@pytest.fixture(scope="module")
def measurements(chromium, server_url, pages) -> dict[str, dict]:
    """What ``book_page_measure.js`` measured on each page of the book, 1280 pixels wide."""
    measured = {}
    for name in filter(pages.__contains__, _toc_pages()):
        dom = _rendered_dom(chromium, f"{server_url}/{name}?measure", width=VIEWPORT_WIDTH)
        found = re.search(r'<script type="application/json" id="prostseg-measurements">(.*?)</script>', dom, re.S)
        assert found, f"{name}: the measuring script left no result"
        result = json.loads(found.group(1))
        assert "error" not in result, f"{name}: the measuring script failed: {result['error']}"
        assert result["viewport_width"] == VIEWPORT_WIDTH, f"{name}: window {result['viewport_width']} px wide"
        measured[name] = result
    return measured


def _figure_text_problem(image: dict) -> str | None:
    """Why the text of a measured image is not readable as shown, or None."""
    if image["record"] is None:
        if (image["software"] or "").startswith("Matplotlib"):
            return "a matplotlib figure without a text record (not rendered by prostseg.figure_png)"
        return None  # not a figure: e.g. the slices of a slice browser, which hold no text
    record = json.loads(image["record"])
    if record["px"] is None:
        return None  # a figure without text
    scale = image["shown_width"] / image["natural_width"]
    shown = record["px"] * scale
    if shown >= MIN_TEXT_PX:
        return None
    return (f"text {record['text']!r} is {shown:.1f} px as shown ({record['px']:.1f} px in the image, "
            f"shown at {scale:.0%} of its width)")


@pytest.mark.slow
def test_figure_text_is_readable_at_page_width(measurements):
    problems, recorded = [], 0
    for name, result in measurements.items():
        for image in result["images"]:
            recorded += image["record"] is not None
            problem = _figure_text_problem(image)
            if problem:
                where = "slice browser image" if image["widget"] else image["src"].rsplit("/", 1)[-1][:16]
                problems.append(f"{name}: {where}: {problem}")
    assert recorded, "no image on any page carries a text record: was the book built with book/build.sh?"
    assert not problems, (
        f"figure text smaller than {MIN_TEXT_PX:g} px in a {VIEWPORT_WIDTH} px wide window:\n" + "\n".join(problems)
    )


@pytest.mark.slow
def test_code_outputs_and_tables_fit_the_column(measurements):
    problems = [
        f"{name}: {box['kind']} {box['width']:.0f} px wide: {box['text']!r}"
        for name, result in measurements.items() for box in result["overflowing"]
    ]
    code = {result["code_columns"] for result in measurements.values()} - {None}
    output = {result["output_columns"] for result in measurements.values()} - {None}
    assert not problems, (
        f"boxes wider than the column of a {VIEWPORT_WIDTH} px window (one line of a code cell shows "
        f"{sorted(code)} characters, of an output {sorted(output)}):\n" + "\n".join(problems)
    )
