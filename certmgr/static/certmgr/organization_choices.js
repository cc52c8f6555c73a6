// Choices that follow the organization: when the organization select changes, the selects of its CAs,
// policies, connections and channels are reloaded from the admin's JSON endpoint (data-dependent-choices-url).
// The server narrows and checks the same choices; this only keeps the page from offering another
// organization's rows.
(function () {
  function refill(select, options) {
    const kept = new Set(Array.from(select.selectedOptions).map(o => o.value));
    select.replaceChildren(...options.map(([value, label]) => {
      const option = new Option(label, value);
      option.selected = kept.has(value);
      return option;
    }));
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }
  function reload(orgSelect) {
    const url = orgSelect.dataset.dependentChoicesUrl;
    const form = orgSelect.form;
    if (!url || !form) return;
    if (!orgSelect.value) return;
    const query = new URLSearchParams({ organization: orgSelect.value });
    fetch(url + (url.includes("?") ? "&" : "?") + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(r => (r.ok ? r.json() : null))
      .then(data => {
        if (!data) return;
        for (const [name, options] of Object.entries(data.fields)) {
          const select = form.querySelector(`select[name="${name}"]`);
          if (select) refill(select, options);
        }
        form.dataset.organizationChoices = String(data.organization);  // tests wait for this
      })
      .catch(() => {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select[data-dependent-choices-url]").forEach(orgSelect => {
      orgSelect.addEventListener("change", () => reload(orgSelect));
    });
  });
})();
