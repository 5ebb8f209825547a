// Small progressive enhancement; every page works without it.
// A test clock that is advancing: poll its status and redraw the page once it is ready.
(function () {
  "use strict";
  var status = document.getElementById("clock-status");
  if (!status || status.dataset.status !== "advancing") { return; }
  function poll() {
    fetch(status.dataset.poll, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (clock) {
        if (clock.status === "ready") { window.location.reload(); }
        else { window.setTimeout(poll, 500); }
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 500);
})();
