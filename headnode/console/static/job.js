/* A running job's timeline, kept up to date: every 1.5 s, the page's JSON twin
   (/console/jobs/<uuid>.json) is read and its server-rendered timeline swapped in, until the
   job has finished. Without this script the page shows the job as it was at load. */
(function () {
  "use strict";

  var INTERVAL_MS = 1500;
  // after this many failed reads in a row (head node restarting, network gone) it gives up
  var MAX_FAILURES = 10;

  var section = document.getElementById("job-timeline");
  var body = document.getElementById("job-timeline-body");
  if (!section || !body || section.getAttribute("data-finished") === "true") {
    return;
  }
  var url = section.getAttribute("data-poll");
  var failures = 0;

  function later(delay) {
    window.setTimeout(poll, delay);
  }

  function stop() {
    section.setAttribute("data-finished", "true");
  }

  function show(data) {
    failures = 0;
    if (typeof data.html === "string") {
      body.innerHTML = data.html;  // rendered and escaped by the server's template
    }
    if (data.finished) {
      stop();
    } else {
      later(INTERVAL_MS);
    }
  }

  function poll() {
    window.fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (response.status >= 400 && response.status < 500 || type.indexOf("json") < 0) {
        // gone, or signed out (the sign-in page answers): nothing more to show here
        stop();
        return null;
      }
      if (!response.ok) {
        throw new Error("status " + response.status);
      }
      return response.json();
    }).then(function (data) {
      if (data) {
        show(data);
      }
    }).catch(function () {
      failures += 1;
      if (failures < MAX_FAILURES) {
        later(INTERVAL_MS * (failures + 1));
      }
    });
  }

  later(INTERVAL_MS);
}());
