// Switchboard console: small progressive enhancements. Every page works without it.
// - forms with data-confirm ask before submitting;
// - elements with data-refresh="SECONDS" reload their page section from the server
//   (the same URL, the element with the same id) on that period, while the tab is visible;
// - buttons with data-copy copy the text of the element they name.
"use strict";
document.addEventListener("submit", (ev) => {
  const msg = ev.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) ev.preventDefault();
});
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("[data-copy]");
  if (!b) return;
  const el = document.getElementById(b.getAttribute("data-copy"));
  if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent.trim());
});
function refresh(el) {
  const secs = Number(el.getAttribute("data-refresh")) || 10;
  setInterval(async () => {
    if (document.hidden) return;
    try {
      const r = await fetch(window.location.href, { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById(el.id);
      if (fresh) el.replaceChildren(...fresh.childNodes);
    } catch (_) { /* next period */ }
  }, secs * 1000);
}
document.querySelectorAll("[data-refresh][id]").forEach(refresh);
// file inputs with data-preview="IMG_ID" show the chosen image there (read as a data: URL,
// which the Content-Security-Policy allows for images).
document.addEventListener("change", (ev) => {
  const input = ev.target;
  const id = input.getAttribute && input.getAttribute("data-preview");
  if (!id || !input.files || !input.files[0]) return;
  const img = document.getElementById(id);
  const reader = new FileReader();
  reader.onload = () => { img.src = reader.result; img.classList.remove("hidden"); };
  reader.readAsDataURL(input.files[0]);
});
