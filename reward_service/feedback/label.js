// Keyboard-first labeling. Reads the task from data- attributes, posts JSON to the API with the
// page's CSRF token, and moves on by loading the next page. Writes text only, never HTML.
(() => {
  "use strict";
  const main = document.querySelector("main");
  const status = document.getElementById("status");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const taskId = main.dataset.taskId ? Number(main.dataset.taskId) : null;
  const kind = main.dataset.kind;
  const n = Number(main.dataset.responses || 0);
  const ranking = [];
  let busy = false;

  async function post(path, body) {
    busy = true;
    status.textContent = "";
    try {
      const response = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body || {}),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        status.textContent = (data.error && data.error.message) || `error ${response.status}`;
        busy = false;
        return null;
      }
      return data;
    } catch (err) {
      status.textContent = "cannot reach the server; your last answer was not saved";
      busy = false;
      return null;
    }
  }

  function unsafeFlags() {
    return Array.from({ length: n }, (_, i) =>
      document.querySelector(`[data-unsafe="${i}"]`).checked);
  }

  async function answer(value) {
    if (busy || taskId === null) return;
    const data = await post("/api/v1/labels", { task_id: taskId, answer: value, unsafe: unsafeFlags() });
    if (data) window.location.assign("/");
  }

  async function skip() {
    if (busy || taskId === null) return;
    if (await post("/api/v1/labels", { task_id: taskId, skip: true })) window.location.assign("/");
  }

  async function undo() {
    if (busy) return;
    const data = await post("/api/v1/undo");
    if (data) window.location.assign(`/tasks/${data.label.task_id}`);
  }

  function showRanks() {
    document.querySelectorAll(".response").forEach((el) => {
      const place = ranking.indexOf(Number(el.dataset.index));
      el.classList.toggle("ranked", place >= 0);
      const badge = el.querySelector(".rank");
      if (badge) badge.textContent = place >= 0 ? `#${place + 1}` : "";
    });
  }

  function pick(index) {
    if (index < 0 || index >= n) return;
    if (kind === "pairwise") return answer(index);
    if (kind !== "ranking" || ranking.includes(index)) return;
    ranking.push(index);
    if (ranking.length === n - 1) {
      for (let i = 0; i < n; i++) if (!ranking.includes(i)) ranking.push(i);
    }
    showRanks();
    if (ranking.length === n) answer(ranking.slice());
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const digit = /^Digit([1-9])$/.exec(event.code);
    if (digit && event.shiftKey) {
      const box = document.querySelector(`[data-unsafe="${Number(digit[1]) - 1}"]`);
      if (box) box.checked = !box.checked;
    } else if (digit) {
      const value = Number(digit[1]);
      if (kind === "rating") {
        if (value <= 5) answer(value);
      } else {
        pick(value - 1);
      }
    } else if (event.key === "s") {
      skip();
    } else if (event.key === "u") {
      undo();
    } else if (event.key === "Backspace" && kind === "ranking") {
      ranking.length = 0;
      showRanks();
    } else {
      return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.dataset.pick !== undefined) pick(Number(target.dataset.pick));
    else if (target.dataset.rate !== undefined) answer(Number(target.dataset.rate));
    else if (target.dataset.action === "skip") skip();
    else if (target.dataset.action === "undo") undo();
  });
})();
