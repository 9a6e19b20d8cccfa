// videolang search page: a search box, a grid of moments, a player opening at a moment's start.
// The query lives in the URL (?q=...), so a search can be shared and reloaded; a server token
// given as ?token=... is kept there too and sent with every request.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);
const form = $("search"), box = $("q"), statusLine = $("status"), grid = $("results");
const dialog = $("player"), video = $("video");
let lastHit = null; // the result button that opened the player, focused again when it closes
let searchId = 0; // answers to superseded searches are dropped

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function getJSON(url) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(url, { headers });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function clock(seconds) {
  const m = Math.floor(seconds / 60), s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function pageURL(query) {
  const next = new URLSearchParams(params);
  if (query) next.set("q", query); else next.delete("q");
  const qs = next.toString();
  return location.pathname + (qs ? "?" + qs : "");
}

async function search(query, { push = true } = {}) {
  query = query.trim();
  if (push && pageURL(query) !== location.pathname + location.search) history.pushState(null, "", pageURL(query));
  grid.replaceChildren();
  if (!query) return setStatus("Type what you are looking for and press Enter.");
  const id = ++searchId;
  setStatus(`Searching for “${query}”…`);
  const k = params.get("k") || "12";
  try {
    const answer = await getJSON(`api/search?q=${encodeURIComponent(query)}&k=${encodeURIComponent(k)}`);
    if (id !== searchId) return;
    render(answer.results);
    setStatus(answer.results.length
      ? `${answer.results.length} moments for “${answer.query}”`
      : `No moments found for “${answer.query}”.`);
  } catch (error) {
    if (id === searchId) setStatus(`Search failed: ${error.message}`, true);
  }
}

function render(results) {
  const items = results.map((hit, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.index = String(i);
    button.dataset.start = String(hit.start);
    button.setAttribute("aria-label", `${hit.video}, ${clock(hit.start)} to ${clock(hit.end)}, score ${hit.score.toFixed(3)}`);
    const img = document.createElement("img");
    img.src = withToken(hit.thumbnail_url);
    img.alt = "";
    img.loading = "lazy";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = hit.video;
    const meta = document.createElement("span");
    meta.className = "meta";
    const time = document.createElement("span");
    time.textContent = `${clock(hit.start)}–${clock(hit.end)}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(time, score);
    button.append(img, name, meta);
    button.addEventListener("click", () => play(hit, button));
    const li = document.createElement("li");
    li.append(button);
    return li;
  });
  grid.replaceChildren(...items);
}

function play(hit, button) {
  lastHit = button;
  $("player-title").textContent = hit.video;
  $("player-time").textContent = `${clock(hit.start)}–${clock(hit.end)} · score ${hit.score.toFixed(3)}`;
  video.dataset.start = String(hit.start);
  video.onloadedmetadata = () => {
    video.currentTime = Math.min(hit.start, video.duration || hit.start);
    video.play().catch(() => { /* autoplay refused: the controls are there */ });
  };
  video.src = withToken(hit.video_url);
  dialog.showModal();
  video.focus();
}

// Arrow keys move between results (up/down by a row of the grid); Home/End to the ends.
grid.addEventListener("keydown", (event) => {
  const buttons = [...grid.querySelectorAll(".hit")];
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const top = buttons[0].offsetTop;
  const perRow = Math.max(1, buttons.filter((b) => b.offsetTop === top).length);
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[event.key];
  let next = null;
  if (step !== undefined) next = Math.min(Math.max(at + step, 0), buttons.length - 1);
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = buttons.length - 1;
  if (next === null) return;
  event.preventDefault();
  if (event.key === "ArrowUp" && at < perRow) box.focus();
  else buttons[next].focus();
});

box.addEventListener("keydown", (event) => {
  const first = grid.querySelector(".hit");
  if (event.key === "ArrowDown" && first) { event.preventDefault(); first.focus(); }
});

// "/" anywhere on the page (not while typing or watching) goes back to the search box.
document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || dialog.open || event.target === box || event.ctrlKey || event.metaKey) return;
  event.preventDefault();
  box.focus();
  box.select();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search(box.value);
});

$("close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => {
  video.pause();
  video.removeAttribute("src");
  video.load();
  // Back to the result that opened the player, unless the user has already moved on (the close
  // event comes after the dialog hides, so a quick "/" may have focused the search box).
  if (lastHit && (document.activeElement === document.body || dialog.contains(document.activeElement))) {
    lastHit.focus();
  }
});

window.addEventListener("popstate", () => {
  const query = new URLSearchParams(location.search).get("q") || "";
  box.value = query;
  search(query, { push: false });
});

getJSON("api/stats").then((s) => {
  const model = s.model ? `${s.model.family} ${s.model.task}` : "";
  $("stats").textContent = `${s.videos} videos · ${s.windows} moments indexed · ${model} · ${s.index.kind} index`;
}).catch((error) => setStatus(`The server did not answer: ${error.message}`, true));

if (params.get("q")) {
  box.value = params.get("q");
  search(box.value, { push: false });
}
