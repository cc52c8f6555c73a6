// The ACME CA form: a vendor preset fills (and locks) the directory URL and says whether EAB is needed.
(function () {
  const presets = Object.fromEntries(JSON.parse(document.getElementById("acme-presets").textContent).map(p => [p.vendor, p]));
  const vendor = document.getElementById("id_vendor");
  const url = document.getElementById("id_directory_url");
  const note = document.getElementById("acme-vendor-note");
  if (!vendor || !url) return;
  function show() {
    const p = presets[vendor.value];
    if (!p) return;
    if (p.directory_url) { url.value = p.directory_url; url.readOnly = true; } else { url.readOnly = false; }
    const eab = p.eab_required ? p.label + " requires external account binding: enter the EAB key id and HMAC key." :
      p.label + ": no external account binding needed.";
    note.textContent = eab + (p.note ? " " + p.note : "");
  }
  vendor.addEventListener("change", function () { if (!presets[vendor.value].directory_url) url.value = ""; show(); });
  show();
})();
