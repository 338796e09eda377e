// Loaded between require.js and the ipywidgets HTML manager (see nb_ipywidgets_js in
// _config.yml). The manager loads its icon fonts from the folder RequireJS resolves its
// module to; by default that is relative to the page, which breaks on pages in
// sub-folders. Point the module at the copy served next to this file instead.
(function () {
  var src = document.currentScript.src;
  var staticDir = src.slice(0, src.lastIndexOf("/") + 1);
  window.require.config({
    paths: { "@jupyter-widgets/html-manager/dist": staticDir + "html-manager" },
  });
})();
