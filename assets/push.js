/* Server push (services/push.py): when the run catalog sees a file change, advance the shell's tick now
   instead of waiting up to a second for it, so every page's usual "anything new?" path runs at once.
   At most one push-driven refresh per min_gap_ms; the tick itself goes on as before. */
(function () {
  if (!window.EventSource) { return; }
  var cfg = {};
  try { cfg = JSON.parse(document.getElementById("_dash-config").textContent) || {}; } catch (e) { cfg = {}; }
  var prefix = cfg.requests_pathname_prefix || "/";
  var url = prefix.replace(/\/$/, "") + "/_trainboard/changes";
  var gap = 200, lastFire = 0, timer = null, pushes = 0;
  window.trainboardPush = {refreshes: 0, changes: 0, connected: false};
  function fire() {
    timer = null;
    var cs = window.dash_clientside;
    if (!cs || !cs.set_props) { return; }  /* Dash not started yet: the tick will do */
    lastFire = Date.now();
    pushes += 1;
    try {
      cs.set_props("shell-push", {data: pushes});
      window.trainboardPush.refreshes = pushes;  /* for tests and curious users: pushes that refreshed the page */
    } catch (e) { /* the shell is not on this page (an error page): the tick will do */ }
  }
  function onChange() {
    if (timer !== null) { return; }
    var wait = Math.max(0, lastFire + gap - Date.now());
    timer = window.setTimeout(fire, wait);
  }
  function open() {
    var es = new EventSource(url);
    es.addEventListener("hello", function (ev) {
      try { gap = JSON.parse(ev.data).min_gap_ms || gap; } catch (e) { /* keep the default */ }
    });
    es.onopen = function () { window.trainboardPush.connected = true; };
    es.onmessage = function () { window.trainboardPush.changes += 1; onChange(); };
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", open); } else { open(); }
})();
