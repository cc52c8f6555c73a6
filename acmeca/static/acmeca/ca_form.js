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

// A DNS connection whose last test failed is marked in its option's label; choosing one says so at once.
(function () {
  const select = document.getElementById("id_dns_connection");
  if (!select) return;
  const warning = document.createElement("p");
  warning.id = "acme-connection-warning";
  warning.className = "help";
  warning.setAttribute("role", "status");
  select.closest(".form-row")?.appendChild(warning);
  function show() {
    const option = select.selectedOptions[0];
    warning.textContent = option && option.text.includes("— last test failed")
      ? "This DNS connection failed its last test: orders that use it will fail until it works. Test it again on its page."
      : "";
  }
  select.addEventListener("change", show);
  show();
})();
