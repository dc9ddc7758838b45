// The site works without this file. It tells the log-in form the browser's time zone, so
// a new account shows times in the sender's own zone from the first page; and on pages
// that follow something under way (an export, an erasure, a payment), it looks again
// every few seconds and shows what changed, where a "Check again" link does it by hand.
"use strict";

function fillTimeZone() {
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  document.querySelectorAll("input[data-browser-time-zone]").forEach(function (input) {
    input.value = zone;
  });
}

function followProgress() {
  var region = document.querySelector("[data-poll]");
  if (!region || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = Math.max(1, parseInt(region.getAttribute("data-poll"), 10) || 3);
  window.setTimeout(function look() {
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        var fresh = html && new DOMParser().parseFromString(html, "text/html")
          .getElementById(region.id);
        if (fresh) {
          region.innerHTML = fresh.innerHTML;
          if (!fresh.hasAttribute("data-poll")) {
            region.removeAttribute("data-poll");
            return;
          }
        }
        window.setTimeout(look, seconds * 1000);
      })
      .catch(function () { window.setTimeout(look, seconds * 1000); });
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  fillTimeZone();
  followProgress();
});
