// An ACME order's page follows the order while a worker runs it: it polls the order's status endpoint
// (admin .../status/, JSON) and updates the progress panel, without reloading the page. Polling stops
// once the order is finished (done, failed, cancelled); a network error only slows it down.
(function () {
  "use strict";
  var POLL_MS = 1500;
  var MAX_POLL_MS = 15000;

  function text(id, value, hideWhenEmpty) {
    var node = document.getElementById(id);
    if (!node) return;
    node.textContent = value || "";
    if (hideWhenEmpty) node.hidden = !value;
  }

  function render(panel, data) {
    var bar = document.getElementById("acme-live-progress");
    if (bar) bar.value = data.progress;
    text("acme-live-step", data.step_label);
    text("acme-live-status", data.status_label);
    text("acme-live-attempts", data.attempts ? "attempt " + data.attempts + " of " + data.max_attempts : "");
    text("acme-live-next", data.next_attempt_at ? "next try " + data.next_attempt_at : "");
    text("acme-live-error", data.error, true);
    var list = document.getElementById("acme-live-challenges");
    if (list) {
      list.replaceChildren();
      data.challenges.forEach(function (ch) {
        var item = document.createElement("li");
        item.textContent = ch.identifier + ": " + ch.status_label + (ch.error ? " (" + ch.error + ")" : "");
        list.appendChild(item);
      });
    }
    var cert = document.getElementById("acme-live-certificate");
    if (cert && data.certificate) {
      cert.replaceChildren();
      cert.appendChild(document.createTextNode("Issued: "));
      var link = document.createElement("a");
      link.href = data.certificate.url;
      link.textContent = "certificate " + data.certificate.serial;
      cert.appendChild(link);
      cert.appendChild(document.createTextNode(" (expires " + data.certificate.not_after + ")"));
      cert.hidden = false;
    }
    // The fieldset badges below show the state of the first load: keep their words in step.
    [["status_badge", data.status_label], ["step_badge", data.step_label]].forEach(function (pair) {
      var badge = document.querySelector(".field-" + pair[0] + " .readonly span");
      if (badge) badge.textContent = pair[1];
    });
    panel.dataset.finished = data.finished ? "1" : "0";
    var working = document.getElementById("acme-live-working");
    if (working) working.hidden = data.finished;
  }

  function start(panel) {
    var delay = POLL_MS;
    function poll() {
      fetch(panel.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("status " + response.status);
          return response.json();
        })
        .then(function (data) {
          delay = POLL_MS;
          render(panel, data);
          if (!data.finished) window.setTimeout(poll, delay);
        })
        .catch(function () {
          delay = Math.min(delay * 2, MAX_POLL_MS);
          window.setTimeout(poll, delay);
        });
    }
    window.setTimeout(poll, delay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("acme-live");
    if (panel && panel.dataset.finished !== "1") start(panel);
  });
})();
