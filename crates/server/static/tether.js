// tether web UI: live runner status (server-sent events from /ui/events), buttons that wait for
// a typed confirmation word, the refresh dialog, the copy button and closing open menus. Every page
// works without this script; the server checks everything again.
(function () {
  "use strict";

  // A button named by data-confirm-button stays disabled until its input holds the exact word.
  document.querySelectorAll("input[data-confirm]").forEach(function (input) {
    var button = document.getElementById(input.getAttribute("data-confirm-button"));
    if (!button) return;
    var word = input.getAttribute("data-confirm");
    var update = function () { button.disabled = input.value !== word; };
    input.addEventListener("input", update);
    update();
  });

  // Refresh opens the confirmation as a dialog; without a dialog it goes to the page.
  var dialog = document.getElementById("refresh-dialog");
  var opener = document.getElementById("refresh-open-form");
  if (dialog && opener && typeof dialog.showModal === "function") {
    opener.addEventListener("submit", function (e) {
      e.preventDefault();
      dialog.showModal();
      var input = dialog.querySelector("#confirm-refresh");
      if (input) input.focus();
    });
    dialog.querySelectorAll("[data-dialog-cancel]").forEach(function (cancel) {
      cancel.addEventListener("click", function (e) {
        e.preventDefault();
        dialog.close();
      });
    });
  }

  // Copy buttons copy the text of the element data-copy names.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var copied = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      };
      var select = function () {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        try { if (document.execCommand("copy")) copied(); } catch (ignored) { /* selected: Ctrl-C */ }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.textContent).then(copied, select);
      } else {
        select();
      }
    });
  });

  // One open "..." menu at a time; a click elsewhere closes it.
  document.addEventListener("click", function (e) {
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(e.target)) menu.removeAttribute("open");
    });
  });

  // Live status on the Runners list and on a runner's pages.
  var header = document.getElementById("runner-status");
  if ((header || document.querySelector("tr[data-runner]")) && window.EventSource) {
    var events = new EventSource("/ui/events");
    events.addEventListener("runner", function (message) {
      var ev;
      try { ev = JSON.parse(message.data); } catch (ignored) { return; }
      document.querySelectorAll("tr[data-runner]").forEach(function (row) {
        if (row.getAttribute("data-runner") !== ev.name) return;
        row.querySelectorAll('[data-field="status"]').forEach(function (cell) {
          cell.textContent = ev.status;
          cell.setAttribute("data-status", ev.status);
          cell.title = ev.status_reason;
        });
        row.querySelectorAll('[data-field="reason"]').forEach(function (cell) {
          cell.textContent = ev.status_reason;
        });
      });
      if (header && header.getAttribute("data-name") === ev.name) {
        header.textContent = ev.status;
        header.setAttribute("data-status", ev.status);
        var reason = document.getElementById("runner-status-reason");
        if (reason) reason.textContent = ev.status_reason;
      }
    });
  }
})();
