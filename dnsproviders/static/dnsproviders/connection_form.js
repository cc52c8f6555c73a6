// Show only the credential fieldset of the chosen kind (every fieldset stays in the page without script).
(function () {
  "use strict";
  function sync() {
    var select = document.getElementById("id_kind");
    if (!select) { return; }
    var kind = select.value;
    document.querySelectorAll("fieldset.kind-fields").forEach(function (fieldset) {
      fieldset.style.display = (!kind || fieldset.classList.contains("kind-" + kind)) ? "" : "none";
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("id_kind");
    if (select) { select.addEventListener("change", sync); }
    sync();
  });
})();
