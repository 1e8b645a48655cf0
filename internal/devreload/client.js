// tqserver dev-mode client: live reload and build-error overlay.
// Served by tqserver at /__tqserver/client.js in dev mode only.
(function () {
  "use strict";
  if (window.__tqserverDevReload) return; // injected twice: keep one
  window.__tqserverDevReload = true;

  var EVENTS = "/__tqserver/events";
  var OVERLAY_ID = "tqserver-overlay";
  var MIN_BACKOFF = 500, MAX_BACKOFF = 5000;

  var failures = {};   // worker -> {worker, output, errors}
  var server = null;   // {instance, reload} of the first hello
  var backoff = MIN_BACKOFF;
  var source = null;
  var reloading = false;

  function reload() {
    if (reloading) return;
    reloading = true;
    if (source) source.close();
    location.reload();
  }

  function el(tag, text, css) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text; // never innerHTML
    if (css) e.style.cssText = css;
    return e;
  }

  function render() {
    var old = document.getElementById(OVERLAY_ID);
    var workers = Object.keys(failures).sort();
    if (workers.length === 0) {
      if (old) old.remove();
      return;
    }
    var root = el("div", undefined,
      "position:fixed;inset:0;z-index:2147483647;overflow:auto;box-sizing:border-box;" +
      "margin:0;padding:24px 32px;background:#18181b;color:#e4e4e7;" +
      "font:14px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;text-align:left");
    root.id = OVERLAY_ID;
    root.setAttribute("role", "alertdialog");
    root.setAttribute("aria-live", "assertive");
    var close = el("button", "\u00d7",
      "position:absolute;top:12px;right:16px;background:none;border:0;color:#a1a1aa;" +
      "font:28px/1 sans-serif;cursor:pointer");
    close.title = "Hide until the next build failure";
    close.addEventListener("click", function () { root.remove(); });
    root.appendChild(close);
    workers.forEach(function (w) {
      var f = failures[w];
      root.appendChild(el("h1", "Build failed: " + w,
        "margin:0 0 12px;font-size:20px;color:#f87171;font-family:inherit"));
      var errs = f.errors || [];
      if (errs.length) {
        var ul = el("ul", undefined, "list-style:none;margin:0 0 16px;padding:0");
        errs.forEach(function (e) {
          var pos = e.file + ":" + e.line + (e.col ? ":" + e.col : "");
          var li = el("li", undefined, "margin:0 0 6px;white-space:pre-wrap");
          li.className = "tqserver-error";
          li.appendChild(el("span", pos, "color:#fbbf24"));
          li.appendChild(document.createTextNode(": " + e.message));
          ul.appendChild(li);
        });
        root.appendChild(ul);
      }
      root.appendChild(el("div", "Compiler output", "color:#a1a1aa;margin:0 0 4px"));
      root.appendChild(el("pre", f.output,
        "margin:0 0 24px;padding:12px;background:#09090b;border-radius:4px;" +
        "white-space:pre-wrap;word-break:break-word;font:inherit;color:#d4d4d8"));
    });
    if (old) old.replaceWith(root);
    else (document.body || document.documentElement).appendChild(root);
  }

  function parse(e) {
    try { return JSON.parse(e.data); } catch (err) { return null; }
  }

  function connect() {
    var es = new EventSource(EVENTS);
    source = es;
    es.addEventListener("hello", function (e) {
      var d = parse(e);
      if (!d) return;
      if (server && (server.instance !== d.instance || server.reload !== d.reload)) {
        reload(); // the server restarted, or a reload happened while we were away
        return;
      }
      server = {instance: d.instance, reload: d.reload};
      backoff = MIN_BACKOFF;
      // Forget failures that were fixed while disconnected; the active ones
      // follow as build_failed events.
      var failing = {};
      (d.failing || []).forEach(function (w) { failing[w] = true; });
      var changed = false;
      Object.keys(failures).forEach(function (w) {
        if (!failing[w]) { delete failures[w]; changed = true; }
      });
      if (changed) render();
    });
    es.addEventListener("reload", function (e) {
      var d = parse(e);
      if (d && server) server.reload = d.reload;
      reload();
    });
    es.addEventListener("build_failed", function (e) {
      var d = parse(e);
      if (!d) return;
      failures[d.worker] = d;
      render();
    });
    es.addEventListener("build_fixed", function (e) {
      var d = parse(e);
      if (!d) return;
      delete failures[d.worker];
      render();
    });
    es.onerror = function () {
      // Take reconnection into our own hands: EventSource gives up for good
      // on a non-200 answer (e.g. 502 or 503 while the server restarts).
      es.close();
      if (reloading) return;
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF);
    };
  }

  connect();
})();
