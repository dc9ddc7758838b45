// The recipient's page works without this file: it only makes the "Print" button work
// (browsers print the page from their own menu too). Nothing is sent anywhere.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
});
