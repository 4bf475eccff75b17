// Keeps a reviewer's unsent disposition (choice and comment) in this tab's sessionStorage,
// keyed by case, so a submit that fails (server down, network gone) or a reload loses
// nothing. Restored into an empty form on the next load; removed once the server has stored
// the disposition (the page after a save carries data-draft-saved) and at sign-out.
// sessionStorage, not localStorage: a draft ends with the tab, never outlives it on a shared
// machine. The pages work without this script; it only adds the safety net.
(function () {
  "use strict";
  var PREFIX = "triage-draft:";
  var store;
  try {
    store = window.sessionStorage;
    store.getItem(PREFIX); // storage may be switched off: then do nothing
  } catch (e) {
    return;
  }

  function read(key) {
    try {
      return JSON.parse(store.getItem(key) || "null");
    } catch (e) {
      return null;
    }
  }

  function save(form, key) {
    var comment = form.elements.namedItem("comment");
    var checked = form.querySelector("input[name=disposition]:checked");
    var hidden = form.querySelector("input[type=hidden][name=disposition]");
    var record = form.elements.namedItem("record_id");
    var draft = {
      comment: comment ? comment.value : "",
      disposition: checked ? checked.value : hidden ? hidden.value : "",
      record_id: record ? record.value : "",
    };
    try {
      if (draft.comment || draft.disposition) store.setItem(key, JSON.stringify(draft));
      else store.removeItem(key);
    } catch (e) {
      /* storage full: the form still posts */
    }
  }

  function restore(form, key) {
    var draft = read(key);
    if (!draft) return;
    var comment = form.elements.namedItem("comment");
    var restored = false;
    if (comment && !comment.value && draft.comment) {
      comment.value = draft.comment;
      restored = true;
    }
    var radios = form.querySelectorAll("input[type=radio][name=disposition]");
    if (draft.disposition && !form.querySelector("input[name=disposition]:checked")) {
      for (var i = 0; i < radios.length; i++) {
        if (radios[i].value === draft.disposition) {
          radios[i].checked = true;
          restored = true;
        }
      }
    }
    var record = form.elements.namedItem("record_id");
    if (record && record.tagName === "SELECT" && !record.value && draft.record_id) {
      record.value = draft.record_id;
      restored = restored || record.value === draft.record_id;
    }
    var note = document.getElementById(form.getAttribute("data-draft-note") || "");
    if (restored && note) note.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var saved = document.querySelector("[data-draft-saved]");
    if (saved) store.removeItem(PREFIX + saved.getAttribute("data-draft-saved"));
    var forms = document.querySelectorAll("form[data-draft]");
    for (var i = 0; i < forms.length; i++) {
      (function (form) {
        var key = PREFIX + form.getAttribute("data-draft");
        restore(form, key);
        form.addEventListener("input", function () { save(form, key); });
        form.addEventListener("change", function () { save(form, key); });
        form.addEventListener("submit", function () { save(form, key); });
      })(forms[i]);
    }
    var out = document.querySelectorAll("form[data-clear-drafts]");
    for (var j = 0; j < out.length; j++) {
      out[j].addEventListener("submit", function () {
        for (var k = store.length - 1; k >= 0; k--) {
          var name = store.key(k);
          if (name && name.indexOf(PREFIX) === 0) store.removeItem(name);
        }
      });
    }
  });
})();

// The record picker of a disposition form counts only for a wrong link: with another choice
// it is switched off (a switched-off field is not sent), so a record left selected cannot get
// the submit refused. Without this script the server refuses such a submit with a message.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form.dispose");
    for (var i = 0; i < forms.length; i++) {
      (function (form) {
        var record = form.elements.namedItem("record_id");
        if (!record || record.tagName !== "SELECT") return;
        function sync() {
          var checked = form.querySelector("input[name=disposition]:checked");
          record.disabled = !checked || checked.value !== "wrong_link";
        }
        form.addEventListener("change", sync);
        sync();
      })(forms[i]);
    }
  });
})();
