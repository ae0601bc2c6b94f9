/* The page's own address travels with Dash's layout request (header X-Trainboard-Page), so the server can
   send the page already drawn (app.py serve_layout, callbacks/shell.py first_page) instead of an empty
   container that Dash's page router fills in a second round trip. Any other request is left as it is. */
(function () {
  var fetch0 = window.fetch;
  if (!fetch0) { return; }
  window.fetch = function (input, init) {
    try {
      var url = typeof input === "string" ? input : (input && input.url) || "";
      if (/\/_dash-layout(\?|$)/.test(url)) {
        init = Object.assign({}, init || {});
        var headers = new Headers(init.headers || {});
        headers.set("X-Trainboard-Page", window.location.href);
        init.headers = headers;
      }
    } catch (e) { /* an address the header cannot carry: Dash's router draws the page as usual */ }
    return fetch0.call(this, input, init);
  };
})();
