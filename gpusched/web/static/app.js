// gpusched dashboard: the live log (server-sent events). Text only: appended as text nodes, never as HTML.
"use strict";
(function () {
  var pre = document.getElementById("log");
  if (!pre || !window.EventSource) return;
  var state = document.getElementById("log-state");
  var MAX = 1 << 20;                       // characters kept on the page: the tail of a long log
  var src = new EventSource(pre.getAttribute("data-src"));
  var pending = [], scheduled = false;
  function flush() {                       // at most one DOM update per frame, however fast lines come
    scheduled = false;
    var text = (pre.textContent || "") + pending.join("");
    pending = [];
    if (text.length > MAX) text = text.slice(text.length - MAX);
    pre.textContent = text;
    pre.scrollTop = pre.scrollHeight;
  }
  src.addEventListener("text", function (ev) {
    pending.push(JSON.parse(ev.data));
    if (!scheduled) { scheduled = true; window.requestAnimationFrame(flush); }
  });
  src.addEventListener("end", function (ev) {
    flush();
    if (state) state.textContent = "ended (" + JSON.parse(ev.data) + ")";
    pre.setAttribute("data-ended", "1");
    src.close();
  });
  src.addEventListener("error", function (ev) {
    if (ev.data && state) state.textContent = "error: " + JSON.parse(ev.data);
    if (ev.data) src.close();
  });
})();
