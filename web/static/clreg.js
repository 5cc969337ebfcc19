// clreg web UI: progressive enhancement only; every page works without this file.
// A running job's page follows it over server-sent events instead of reloading.
"use strict";
(function () {
  var job = document.getElementById("job");
  if (!job || !job.dataset.events || !window.EventSource) return;
  var refresh = document.querySelector("noscript");
  var source = new EventSource(job.dataset.events);
  var percent = function (p) { return Math.round(p * 100) + " %"; };
  source.addEventListener("job", function (message) {
    var j = JSON.parse(message.data);
    var state = document.getElementById("job-state");
    state.textContent = j.state;
    state.className = "badge state-" + j.state;
    var bar = document.getElementById("job-progress");
    bar.value = j.progress;
    bar.textContent = percent(j.progress);
    document.getElementById("job-percent").textContent = percent(j.progress);
    document.getElementById("job-message").textContent = j.message;
    document.getElementById("log").textContent = j.log;
    if (j.state !== "queued" && j.state !== "running") {
      source.close();
      window.location.reload(); // the finished page shows results and drops the live parts
    }
  });
  source.addEventListener("error", function () {
    // The server ended the stream or went away: fall back to a plain reload.
    source.close();
    window.setTimeout(function () { window.location.reload(); }, 5000);
  });
  if (refresh) refresh.remove();
})();
