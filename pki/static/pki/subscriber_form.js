// The subscriber form: with an ACME CA chosen, the fields the ACME CA decides (validity, usages, subject
// O/OU/C/ST/L) are hidden and a note says why; the server ignores them for ACME and says so on each field.
(function () {
  function setup() {
    const ca = document.getElementById("id_ca");
    const issuer = document.getElementById("id_issuer_type");
    if (!ca || !ca.dataset.acmeCas) return;
    const acme = new Set(JSON.parse(ca.dataset.acmeCas).map(String));
    const decides = JSON.parse(ca.dataset.acmeDecides || "[]");
    const options = JSON.parse(ca.dataset.acmeOptions || "[]");
    const note = document.createElement("p");
    note.className = "help pki-acme-note";
    note.id = "pki-acme-note";
    note.setAttribute("aria-live", "polite");
    const caRow = ca.closest(".form-row");
    if (caRow) caRow.after(note);
    function show() {
      const isAcme = (!issuer || issuer.value === "ca") && acme.has(ca.value);
      for (const name of decides) {
        const row = document.querySelector(`.form-row.field-${name}`);
        if (row) row.hidden = isAcme;
      }
      // what only an ACME CA takes (profile, challenge type): shown while one is chosen
      for (const name of options) {
        const row = document.querySelector(`.form-row.field-${name}`);
        if (row) row.hidden = !isAcme;
        const set = row && row.closest("fieldset");
        if (set) set.hidden = !isAcme;
      }
      note.textContent = isAcme
        ? "This is an ACME CA: it decides the validity, key usages and the subject's O/OU/C, so those fields are hidden. The profile and challenge type are the CA's unless you choose them below; the key type is yours."
        : "";
    }
    ca.addEventListener("change", show);
    if (issuer) issuer.addEventListener("change", show);
    show();
  }
  document.addEventListener("DOMContentLoaded", setup);
})();
