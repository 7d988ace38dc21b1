// Canopy's admin UI: the little it needs beyond HTML and htmx, loaded as a file (the pages'
// Content-Security-Policy forbids inline scripts). Every page works without it.

// "Select all" per group of event types: a checkbox with data-group-toggle="<group>" ticks or
// clears every checkbox with data-group="<group>", and follows them.
function followGroups(root) {
  root.querySelectorAll("[data-group-toggle]").forEach(function (toggle) {
    var group = toggle.getAttribute("data-group-toggle");
    var members = root.querySelectorAll('[data-group="' + group + '"]');
    function sync() {
      var checked = 0;
      members.forEach(function (m) { if (m.checked) { checked += 1; } });
      toggle.checked = checked === members.length;
      toggle.indeterminate = checked > 0 && checked < members.length;
    }
    toggle.hidden = false;
    var label = toggle.closest("label");
    if (label) { label.hidden = false; }
    toggle.addEventListener("change", function () {
      members.forEach(function (m) { m.checked = toggle.checked; });
    });
    members.forEach(function (m) { m.addEventListener("change", sync); });
    sync();
  });
}

document.addEventListener("DOMContentLoaded", function () { followGroups(document); });
document.addEventListener("htmx:afterSwap", function (e) { followGroups(e.target); });
