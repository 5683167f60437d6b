// The custody console's only script: while a withdrawal is not final, its detail page fetches
// the status part again every few seconds (same-origin, with the session cookie) and swaps it in;
// once it turns final the whole page reloads, so history and attempts show the end too.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var part = document.querySelector("[data-refresh-url]");
  if (!part || part.dataset.final === "true") return;

  function tick() {
    fetch(part.dataset.refreshUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html) {
          var holder = document.createElement("template");
          holder.innerHTML = html.trim();
          var fresh = holder.content.firstElementChild;
          var typing = part.contains(document.activeElement) && document.activeElement.tagName === "INPUT";
          if (fresh && fresh.dataset.final === "true") { window.location.reload(); return; }
          if (fresh && !typing) { part.replaceWith(fresh); part = fresh; }
        }
        window.setTimeout(tick, EVERY_MS);
      })
      .catch(function () { window.setTimeout(tick, EVERY_MS); });
  }
  window.setTimeout(tick, EVERY_MS);
})();
