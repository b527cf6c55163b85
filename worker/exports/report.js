// The gallery's filters: a card shows when it matches every filter chosen. Static (the
// page's Content-Security-Policy allows this script by its hash, and nothing else).
(function () {
  "use strict";
  const form = document.getElementById("filters");
  const cards = Array.from(document.querySelectorAll("#gallery .card"));
  const showing = document.getElementById("showing");
  function apply() {
    const chosen = new FormData(form);
    const task = chosen.get("task");
    const status = chosen.get("status");
    const label = chosen.get("label");
    const error = chosen.get("error");
    let shown = 0;
    for (const card of cards) {
      const match =
        (!task || card.dataset.task === task) &&
        (!status || card.dataset.status === status) &&
        (!error || card.dataset.error === error) &&
        (!label || JSON.parse(card.dataset.labels).includes(label));
      card.hidden = !match;
      if (match) shown += 1;
    }
    showing.textContent = "showing " + shown + " of " + cards.length;
  }
  form.addEventListener("change", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  apply();
})();
