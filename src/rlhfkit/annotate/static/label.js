// Labelling page: keyboard-first ranking. Reads data attributes only (the server escaped all text)
// and talks to the JSON API; after each action the page reloads to show the next item.
(function () {
  "use strict";
  const app = document.getElementById("app");
  if (!app) return;
  const campaign = encodeURIComponent(app.dataset.campaign);
  const assignment = parseInt(app.dataset.assignment || "0", 10);
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";  // the server refuses cookie-authenticated posts without it
  const k = parseInt(app.dataset.k || "0", 10);
  const cards = Array.from(document.querySelectorAll(".response"));
  const submitButton = document.getElementById("submit");
  const rationale = document.getElementById("rationale");
  const message = document.getElementById("message");
  const rankingText = document.getElementById("ranking-text");
  const letters = "ABCDEFGHI";

  // ranking: display positions, best first; tiedWithPrevious[i]: ranking[i] is equal to ranking[i - 1].
  const state = { ranking: [], tiedWithPrevious: [], pendingTie: false, strength: 2, busy: false };

  // Active time on this item: only while the tab is visible.
  let activeMs = 0;
  let visibleSince = document.hidden ? null : performance.now();
  document.addEventListener("visibilitychange", function () {
    if (document.hidden && visibleSince !== null) { activeMs += performance.now() - visibleSince; visibleSince = null; }
    else if (!document.hidden && visibleSince === null) { visibleSince = performance.now(); }
  });
  function seconds() {
    const now = visibleSince === null ? 0 : performance.now() - visibleSince;
    return Math.round(activeMs + now) / 1000;
  }

  function say(text, kind) {
    if (!message) return;
    message.textContent = text;
    message.className = "message" + (kind ? " " + kind : "");
  }

  function complete() { return k > 0 && state.ranking.length === k; }

  function render() {
    cards.forEach(function (card) {
      const pos = parseInt(card.dataset.position, 10);
      const at = state.ranking.indexOf(pos);
      const badge = card.querySelector(".badge");
      card.classList.remove("best", "ranked", "tied", "worst");
      badge.textContent = "";
      if (at < 0) return;
      let rank = 1;
      for (let i = 1; i <= at; i++) if (!state.tiedWithPrevious[i]) rank = i + 1;
      const tied = state.tiedWithPrevious[at] || state.tiedWithPrevious[at + 1];
      card.classList.add(rank === 1 && !tied ? "best" : "ranked");
      if (tied) card.classList.add("tied");
      if (k === 2) badge.textContent = tied ? "tie" : (rank === 1 ? "better" : "worse");
      else badge.textContent = "#" + rank + (tied ? " (tie)" : "");
    });
    if (rankingText) {
      if (!state.ranking.length) {
        rankingText.classList.add("muted");
        rankingText.innerHTML = rankingText.dataset.hint;
      } else {
        rankingText.classList.remove("muted");
        let text = "";
        state.ranking.forEach(function (pos, i) {
          if (i > 0) text += state.tiedWithPrevious[i] ? " = " : " > ";
          text += letters[pos];
        });
        if (state.pendingTie) text += " = …";
        rankingText.textContent = text;
      }
    }
    document.querySelectorAll("[data-strength]").forEach(function (b) {
      b.classList.toggle("on", parseInt(b.dataset.strength, 10) === state.strength);
    });
    if (submitButton) submitButton.disabled = !complete() || state.busy;
  }
  if (rankingText) rankingText.dataset.hint = rankingText.innerHTML;

  function pick(pos) {
    if (pos >= k || state.ranking.indexOf(pos) >= 0) return;
    state.tiedWithPrevious.push(state.pendingTie && state.ranking.length > 0);
    state.ranking.push(pos);
    state.pendingTie = false;
    if (state.ranking.length === k - 1) {  // the last place is implied
      for (let p = 0; p < k; p++) if (state.ranking.indexOf(p) < 0) { state.ranking.push(p); state.tiedWithPrevious.push(false); }
    }
    say("");
    render();
  }

  function tie() {
    if (!state.ranking.length) {  // nothing chosen yet: all responses are equally good
      state.ranking = cards.map(function (c) { return parseInt(c.dataset.position, 10); });
      state.tiedWithPrevious = state.ranking.map(function (_, i) { return i > 0; });
    } else if (complete()) {  // toggle a tie between the last two places
      const last = state.tiedWithPrevious.length - 1;
      state.tiedWithPrevious[last] = !state.tiedWithPrevious[last];
    } else {
      state.pendingTie = !state.pendingTie;  // the next pick is equal to the previous one
    }
    render();
  }

  function clear() { state.ranking = []; state.tiedWithPrevious = []; state.pendingTie = false; say(""); render(); }

  function toggleFlag(name) {
    const box = document.querySelector('[data-flag="' + name + '"]');
    if (box) box.checked = !box.checked;
  }

  function indexOf(pos) { return parseInt(cards.find(function (c) { return parseInt(c.dataset.position, 10) === pos; }).dataset.index, 10); }

  function payload() {
    const ranking = state.ranking.map(indexOf);
    const ties = [];
    let start = 0;
    for (let i = 1; i <= ranking.length; i++) {
      if (i === ranking.length || !state.tiedWithPrevious[i]) {
        for (let a = start; a < i; a++) for (let b = a + 1; b < i; b++) ties.push([ranking[a], ranking[b]]);
        start = i;
      }
    }
    const flags = Array.from(document.querySelectorAll("[data-flag]")).filter(function (b) { return b.checked; })
      .map(function (b) { return b.dataset.flag; });
    return { assignment_id: assignment, ranking: ranking, ties: ties, strength: state.strength, flags: flags,
             rationale: rationale ? rationale.value : "", seconds: seconds() };
  }

  async function post(path, body) {
    const response = await fetch("/api/campaigns/" + campaign + path, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* empty body */ }
    return { ok: response.ok, status: response.status, data: data };
  }

  async function act(path, body, doing) {
    if (state.busy) return;
    state.busy = true; render(); say(doing, "busy");
    try {
      const result = await post(path, body);
      if (result.ok) { window.location.reload(); return; }
      say((result.data && result.data.detail) ? String(typeof result.data.detail === "string" ? result.data.detail : JSON.stringify(result.data.detail)) : "Error " + result.status, "error");
      if (result.status === 409 && path !== "/undo") setTimeout(function () { window.location.reload(); }, 1500);
    } catch (e) {
      say("Network problem: nothing was saved. Try again.", "error");
    }
    state.busy = false; render();
  }

  function submit() {
    if (!assignment) return;
    if (!complete()) { say(k === 2 ? "Choose the better response first (1 or 2), or T for a tie." : "Rank all responses first (press their numbers, best first).", "error"); return; }
    act("/labels", payload(), "Saving…");
  }
  function skip() { if (assignment) act("/skip", { assignment_id: assignment }, "Skipping…"); }
  function undo() { act("/undo", {}, "Undoing…"); }

  function toggleExpand(card, force) {
    const open = force === undefined ? !card.classList.contains("expanded") : force;
    card.classList.toggle("expanded", open);
    const b = card.querySelector(".expand");
    if (b) b.textContent = open ? "collapse" : "expand";
  }

  cards.forEach(function (card) {
    const body = card.querySelector(".body");
    const button = card.querySelector(".expand");
    if (body && button && body.scrollHeight <= body.clientHeight + 4) button.hidden = true;
    if (button) button.addEventListener("click", function (e) { e.stopPropagation(); toggleExpand(card); });
    card.querySelector("header").addEventListener("click", function () { pick(parseInt(card.dataset.position, 10)); });
  });
  document.querySelectorAll("[data-strength]").forEach(function (b) {
    b.addEventListener("click", function () { state.strength = parseInt(b.dataset.strength, 10); render(); });
  });
  if (submitButton) submitButton.addEventListener("click", submit);
  const skipButton = document.getElementById("skip");
  if (skipButton) skipButton.addEventListener("click", skip);
  const clearButton = document.getElementById("clear");
  if (clearButton) clearButton.addEventListener("click", clear);
  const undoButton = document.getElementById("undo");
  if (undoButton) undoButton.addEventListener("click", undo);

  document.addEventListener("keydown", function (e) {
    const typing = e.target && (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT");
    if (typing) {
      if (e.key === "Escape") { e.target.blur(); e.preventDefault(); }
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key >= "1" && key <= "9") { pick(parseInt(key, 10) - 1); }
    else if (key === "t") tie();
    else if (key === "q") { state.strength = 1; render(); }
    else if (key === "w") { state.strength = 2; render(); }
    else if (key === "e") { state.strength = 3; render(); }
    else if (key === "h") toggleFlag("harmful");
    else if (key === "f") toggleFlag("factually_wrong");
    else if (key === "n") toggleFlag("nonsense");
    else if (key === "r" && rationale) { rationale.focus(); }
    else if (key === "x") { const open = !cards.every(function (c) { return c.classList.contains("expanded"); }); cards.forEach(function (c) { toggleExpand(c, open); }); }
    else if (key === "Backspace" || key === "Delete") clear();
    else if (key === "Enter") submit();
    else if (key === "s") skip();
    else if (key === "u") undo();
    else return;
    e.preventDefault();
  });
  render();
})();
