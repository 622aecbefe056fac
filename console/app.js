// events-hub web console: plain JavaScript, no framework, no build step, nothing from
// elsewhere (the Content-Security-Policy allows this origin only). See docs/operations.md.
"use strict";

const STORAGE_KEY = "events-hub-console-credential";
const MAX_EVENTS = 500;          // events kept in the list
const RATE_WINDOW = 60;          // seconds shown by each sparkline
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

const CLOSE_CODES = {
  1000: "closed normally",
  1001: "the hub is shutting down (server shutdown)",
  1002: "protocol error",
  1006: "the connection was lost, or the hub refused the handshake",
  1007: "invalid UTF-8 sent to the hub",
  1008: "message rate limit exceeded",
  1009: "message too big",
  4000: "heartbeat timeout: the hub heard nothing from this page",
  4001: "disconnected by an administrator",
  4008: "slow consumer: this page fell behind the stream",
};

const $ = (id) => document.getElementById(id);

/** What the page knows; one object so the state is easy to follow. */
const state = {
  ws: null,
  wanted: false,          // the user asked to be connected: reconnect when the socket ends
  opened: false,          // the current socket got past the handshake
  attempt: 0,             // consecutive failed attempts, for the back-off
  timer: null,
  clientId: null,
  epoch: null,
  lastSeq: {},            // channel -> seq of the last event seen (from positions, then events)
  subscriptions: [],      // the socket's channels, global last
  paused: false,
  pending: [],            // frames received while paused
  events: [],             // newest last
  selected: null,
  rates: {},              // channel -> Map(second -> count)
  requestId: 0,
};

// ----------------------------------------------------------------------------------------
// Credential

function credential() {
  return sessionStorage.getItem(STORAGE_KEY) || "";
}

/** A JWT is three base64url parts; anything else is taken as an API key. */
function isJwt(text) {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(text);
}

function authHeaders() {
  const c = credential();
  if (!c) return {};
  return isJwt(c) ? { Authorization: `Bearer ${c}` } : { "X-Api-Key": c };
}

function showCredentialKind() {
  const c = credential();
  $("credential-kind").textContent = !c
    ? "No credential saved."
    : isJwt(c)
      ? "Saved: a JWT (used on the WebSocket and on HTTP calls)."
      : "Saved: an API key (HTTP calls only; it cannot open the WebSocket from a browser).";
}

// ----------------------------------------------------------------------------------------
// Status and problems

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = kind;
}

function showProblem(text) {
  const el = $("problem");
  el.textContent = text;
  el.hidden = !text;
}

/** What a refused request's status means, in words. */
function explainStatus(status, body) {
  const detail = body && body.message ? ` The hub said: “${body.message}”` : "";
  switch (status) {
    case 400: return `400 bad request: the hub could not read the request.${detail}`;
    case 401: return `401 unauthorized: the credential is missing, malformed, expired or signed with another secret.${detail}`;
    case 403: return `403 forbidden: the credential is valid but lacks the claim this needs (READ_ONLY to subscribe, EVENTS_ADMIN for the client list), or the client belongs to someone else, or this page's Origin is not in admission.allowed_origins.${detail}`;
    case 404: return `404 not found.${detail}`;
    case 409: return `409 connection limit: another WebSocket from this IP address is already open (admission.max_connections_per_ip). Close the other tab or client.${detail}`;
    case 429: return `429 too many connections for this identity (admission.max_connections_per_identity).${detail}`;
    case 503: return `503 unavailable: the hub is shutting down, or full (admission.max_connections).${detail}`;
    default: return `HTTP ${status}.${detail}`;
  }
}

async function readJson(response) {
  try { return await response.json(); } catch { return null; }
}

/**
 * The browser's WebSocket API hides why a handshake failed (the page sees only close code
 * 1006). So ask the hub the same question over plain HTTP: the subscribe URL without an
 * upgrade, with the credential as a header. The hub checks the credential and the claim
 * before the upgrade, so 401/403 come back as they would on the handshake, and a 426
 * (upgrade required) means the credential is fine. Then /readyz tells a hub that is shutting
 * down; what remains happens only on a real handshake (admission limits, the Origin
 * allowlist, a query token turned off), and is named as such. Returns the words, and whether
 * retrying is pointless (401/403: only another credential helps).
 */
async function explainRefusal(path) {
  try {
    const reply = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    if (reply.status !== 426) {
      // 401/403 will not change by retrying: the user has to paste another credential.
      const fatal = reply.status === 401 || reply.status === 403;
      return { text: explainStatus(reply.status, await readJson(reply)), fatal };
    }
    const ready = await fetch("/readyz", { cache: "no-store" });
    if (ready.status === 503) return { text: explainStatus(503, await readJson(ready)), fatal: false };
    return { fatal: false, text: "The credential and its claim are fine, so the hub refused at admission: another " +
      "WebSocket from this IP is open (409, admission.max_connections_per_ip), this identity " +
      "has too many (429), the hub is full (503), this page's Origin is not in " +
      "admission.allowed_origins (403), or auth.allow_query_token is off (401)." };
  } catch (error) {
    return { text: `The hub cannot be reached (${error.message}).`, fatal: false };
  }
}

// ----------------------------------------------------------------------------------------
// The socket

function chosenChannels() {
  const boxes = [...document.querySelectorAll('input[name="channel"]:checked')].map((b) => b.value);
  const extra = $("extra-channels").value.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  return [...new Set([...boxes, ...extra])];
}

/** The subscribe path: the channels, and on a reconnect the position to resume from. */
function subscribePath(channels) {
  const params = new URLSearchParams();
  const named = channels.filter((c) => c !== "global");
  if (named.length) params.set("event_types", named.join(","));
  if (state.epoch !== null) {
    const since = ["global", ...named]
      .filter((c) => Number.isInteger(state.lastSeq[c]))
      .map((c) => `${c}:${state.lastSeq[c]}`);
    if (since.length) {
      params.set("since", since.join(","));
      params.set("epoch", String(state.epoch));
    }
  }
  const query = params.toString();
  return `/v1/ws/subscribe${query ? `?${query}` : ""}`;
}

function connect() {
  const c = credential();
  if (!c) { showProblem("Paste a JWT and press Save first."); return; }
  if (!isJwt(c)) {
    showProblem("An API key cannot open a WebSocket from a browser (it would need the X-Api-Key header, which the WebSocket API cannot send). Use a JWT; the API key still works for the admin view and unsubscribe.");
    return;
  }
  state.wanted = true;
  $("connect").disabled = true;
  $("disconnect").disabled = false;
  openSocket(state.subscriptions.length ? state.subscriptions : chosenChannels());
}

function openSocket(channels) {
  clearTimeout(state.timer);
  const path = subscribePath(channels);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const sep = path.includes("?") ? "&" : "?";
  const url = `${scheme}//${location.host}${path}${sep}access_token=${encodeURIComponent(credential())}`;
  setStatus(state.attempt ? `Reconnecting (attempt ${state.attempt + 1})…` : "Connecting…", "connecting");
  state.opened = false;
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.addEventListener("open", () => { state.opened = true; });
  ws.addEventListener("message", (e) => onFrame(e.data));
  ws.addEventListener("close", (e) => onClose(ws, e, path));
}

async function onClose(ws, event, path) {
  if (state.ws !== ws) return;
  state.ws = null;
  $("subscribe").disabled = true;
  const meaning = CLOSE_CODES[event.code] || "";
  if (!state.wanted) { setStatus("Disconnected", "idle"); return; }
  if (!state.opened) {
    const refusal = await explainRefusal(path);
    if (refusal.fatal) {
      disconnect();
      showProblem(`Could not connect, and retrying will not help. ${refusal.text}`);
      return;
    }
    showProblem(`Could not connect. ${refusal.text}`);
  } else {
    showProblem(`The socket closed: ${event.code}${meaning ? ` ${meaning}` : ""}${event.reason ? ` (“${event.reason}”)` : ""}. Reconnecting and resuming.`);
    state.attempt = 0;
  }
  if (!state.wanted) return;
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = base / 2 + Math.random() * base / 2;
  state.attempt += 1;
  setStatus(`Disconnected; reconnecting in ${(delay / 1000).toFixed(1)} s`, "waiting");
  state.timer = setTimeout(() => { if (state.wanted) openSocket(state.subscriptions.length ? state.subscriptions : chosenChannels()); }, delay);
}

function disconnect() {
  state.wanted = false;
  clearTimeout(state.timer);
  if (state.ws) state.ws.close(1000, "console disconnect");
  $("connect").disabled = false;
  $("disconnect").disabled = true;
  setStatus("Disconnected", "idle");
}

function onFrame(text) {
  let frame;
  try { frame = JSON.parse(text); } catch { return; }
  if (!frame || typeof frame !== "object") return;
  if (frame.namespace === "events") { onEventsAnswer(frame); return; }
  if (frame.message === "WebSocket connection established subscribed to global by default" && frame.body && frame.body.client_id) {
    onWelcome(frame.body);
  }
  if (frame.event_type && Number.isInteger(frame.seq)) {
    state.lastSeq[frame.event_type] = frame.seq;
  }
  if (frame.event_type === "system" && (frame.message === "subscribe" || frame.message === "unsubscribe") && frame.body && frame.body.subscriptions) {
    setSubscriptions(frame.body.subscriptions);
  }
  countRate(frame.event_type || "other");
  if (state.paused) { state.pending.push(frame); updateCounts(); return; }
  addEvent(frame);
}

function onWelcome(body) {
  const restarted = state.epoch !== null && body.epoch !== state.epoch;
  state.clientId = body.client_id;
  state.epoch = body.epoch;
  state.attempt = 0;
  if (restarted) state.lastSeq = {};
  // positions: per channel, the seq the stream continues after.
  for (const [channel, seq] of Object.entries(body.positions || {})) state.lastSeq[channel] = seq;
  setSubscriptions(body.subscriptions || []);
  $("client-id").textContent = body.client_id;
  $("epoch").textContent = String(body.epoch);
  const resume = $("resume");
  if (body.recovered === true) {
    resume.textContent = "recovered: every missed event is replayed";
    resume.dataset.state = "ok";
  } else if (body.recovered === false) {
    resume.textContent = `gap: ${body.reason || "some events could not be replayed"}${body.unrecovered ? ` (live without replay: ${body.unrecovered.join(", ")})` : ""}`;
    resume.dataset.state = "gap";
  } else {
    resume.textContent = "new connection (nothing to resume)";
    resume.dataset.state = "";
  }
  showProblem("");
  setStatus(`Connected as client ${body.client_id}`, "connected");
  $("subscribe").disabled = false;
  refreshAdmin();
}

function setSubscriptions(list) {
  state.subscriptions = list;
  const ul = $("subscriptions");
  ul.replaceChildren(...list.map((channel) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = channel;
    li.append(name);
    if (channel !== "global") {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Unsubscribe";
      button.dataset.channel = channel;
      button.setAttribute("aria-label", `Unsubscribe from ${channel}`);
      button.addEventListener("click", () => unsubscribe(channel));
      li.append(" ", button);
    }
    return li;
  }));
  for (const channel of list) ensureRate(channel);
}

/** `POST /v1/ws/unsubscribe` with the welcome's client_id; the socket stays open. */
async function unsubscribe(channel) {
  if (!state.clientId) return;
  try {
    const reply = await fetch("/v1/ws/unsubscribe", {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ client_id: state.clientId, event_types: [channel] }),
    });
    const body = await readJson(reply);
    if (!reply.ok) { showProblem(`Unsubscribe from ${channel} failed. ${explainStatus(reply.status, body)}`); return; }
    if (body && body.remaining_subscriptions) setSubscriptions(body.remaining_subscriptions);
    delete state.lastSeq[channel];
    showProblem("");
  } catch (error) {
    showProblem(`Unsubscribe failed: ${error.message}`);
  }
}

/**
 * In-band subscribe with sysadm's `events` envelope: unlike the `system`-key message it works
 * on any socket, also one not subscribed to `system`.
 */
function subscribeInBand(channels) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !channels.length) return;
  state.requestId += 1;
  state.ws.send(JSON.stringify({ namespace: "events", name: "subscribe", id: `console-${state.requestId}`, args: channels }));
}

function onEventsAnswer(frame) {
  const args = frame.args || {};
  if (frame.name === "error") { showProblem(`Subscribe refused: ${args.error || "unknown error"}`); return; }
  if (args.subscriptions) setSubscriptions(args.subscriptions);
  for (const [channel, seq] of Object.entries(args.positions || {})) state.lastSeq[channel] = seq;
  showProblem(args.ignored_event_types ? `Not channels of this hub: ${args.ignored_event_types.join(", ")}` : "");
}

// ----------------------------------------------------------------------------------------
// The event list

function matches(frame, needle) {
  if (!needle) return true;
  const hay = `${frame.message || ""} ${frame.body ? JSON.stringify(frame.body) : ""}`.toLowerCase();
  return hay.includes(needle);
}

function eventItem(frame) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "event";
  button.dataset.channel = frame.event_type || "";
  button.dataset.message = frame.message || "";
  const time = document.createElement("time");
  time.textContent = (frame.timestamp || "").replace(/^.*T/, "").replace(/Z$/, "");
  const channel = document.createElement("span");
  channel.className = "channel";
  channel.textContent = frame.event_type || "?";
  const message = document.createElement("span");
  message.className = "message";
  message.textContent = frame.message || (frame.namespace ? `${frame.namespace}/${frame.name}` : "");
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = Number.isInteger(frame.seq) ? `#${frame.seq}` : "";
  button.append(time, " ", channel, " ", message, " ", seq);
  button.addEventListener("click", () => select(frame, button));
  li.append(button);
  li.hidden = !matches(frame, $("filter").value.trim().toLowerCase());
  return li;
}

function addEvent(frame) {
  state.events.push(frame);
  const list = $("events");
  list.prepend(eventItem(frame));
  while (state.events.length > MAX_EVENTS) {
    state.events.shift();
    list.lastElementChild?.remove();
  }
  updateCounts();
}

function select(frame, button) {
  for (const el of document.querySelectorAll(".event[aria-current]")) el.removeAttribute("aria-current");
  button.setAttribute("aria-current", "true");
  $("detail").textContent = JSON.stringify(frame, null, 2);
}

function applyFilter() {
  const needle = $("filter").value.trim().toLowerCase();
  const items = [...$("events").children];
  // The list is newest first, state.events newest last.
  items.forEach((li, i) => { li.hidden = !matches(state.events[state.events.length - 1 - i], needle); });
  updateCounts();
}

function updateCounts() {
  const shown = [...$("events").children].filter((li) => !li.hidden).length;
  $("counts").textContent = `${shown} shown of ${state.events.length}${state.pending.length ? `, ${state.pending.length} waiting (paused)` : ""}`;
}

function togglePause() {
  state.paused = !state.paused;
  const button = $("pause");
  button.textContent = state.paused ? "Resume" : "Pause";
  button.setAttribute("aria-pressed", String(state.paused));
  if (!state.paused) {
    const waiting = state.pending;
    state.pending = [];
    waiting.forEach(addEvent);
  }
  updateCounts();
}

// ----------------------------------------------------------------------------------------
// Per-channel rate sparklines (canvas, events per second over the last minute)

function ensureRate(channel) {
  if (state.rates[channel]) return;
  state.rates[channel] = new Map();
  const figure = document.createElement("figure");
  figure.className = "rate";
  const canvas = document.createElement("canvas");
  canvas.width = 120;
  canvas.height = 28;
  canvas.dataset.channel = channel;
  canvas.setAttribute("role", "img");
  const caption = document.createElement("figcaption");
  caption.dataset.channel = channel;
  caption.textContent = channel;
  figure.append(canvas, caption);
  $("rates").append(figure);
}

function countRate(channel) {
  ensureRate(channel);
  const second = Math.floor(Date.now() / 1000);
  const counts = state.rates[channel];
  counts.set(second, (counts.get(second) || 0) + 1);
}

function drawRates() {
  const now = Math.floor(Date.now() / 1000);
  const color = getComputedStyle(document.body).getPropertyValue("--accent").trim() || "#36c";
  for (const canvas of document.querySelectorAll("#rates canvas")) {
    const channel = canvas.dataset.channel;
    const counts = state.rates[channel];
    for (const second of counts.keys()) if (second <= now - RATE_WINDOW) counts.delete(second);
    const series = Array.from({ length: RATE_WINDOW }, (_, i) => counts.get(now - RATE_WINDOW + 1 + i) || 0);
    const max = Math.max(1, ...series);
    const total = series.reduce((a, b) => a + b, 0);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    series.forEach((v, i) => {
      const x = (i / (RATE_WINDOW - 1)) * (canvas.width - 2) + 1;
      const y = canvas.height - 2 - (v / max) * (canvas.height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const label = `${channel}: ${total} in the last ${RATE_WINDOW} s, peak ${max === 1 && total === 0 ? 0 : max}/s`;
    canvas.setAttribute("aria-label", label);
    const caption = canvas.nextElementSibling;
    if (caption) caption.textContent = `${channel} ${total}/min`;
  }
}

// ----------------------------------------------------------------------------------------
// Admin view: shown only when GET /v1/admin/clients answers (the credential has EVENTS_ADMIN)

async function refreshAdmin() {
  if (!credential()) { $("admin").hidden = true; return; }
  try {
    const reply = await fetch("/v1/admin/clients", { headers: authHeaders(), cache: "no-store" });
    if (reply.status === 401 || reply.status === 403) { $("admin").hidden = true; return; }
    const body = await readJson(reply);
    if (!reply.ok || !body) { $("admin-note").textContent = explainStatus(reply.status, body); return; }
    $("admin").hidden = false;
    $("admin-note").textContent = `${body.clients.length} live client(s), read ${new Date().toLocaleTimeString()}`;
    $("admin-clients").replaceChildren(...body.clients.map(clientRow));
  } catch (error) {
    $("admin-note").textContent = `Could not read the clients: ${error.message}`;
  }
}

function clientRow(client) {
  const tr = document.createElement("tr");
  const cells = [
    client.client_id + (client.client_id === state.clientId ? " (this page)" : ""),
    `${client.owner?.subject ?? ""} (${client.owner?.method ?? ""})`,
    client.ip ?? "",
    (client.subscriptions || []).join(", "),
    client.connected_since ?? "",
  ];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  const td = document.createElement("td");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Disconnect";
  button.setAttribute("aria-label", `Disconnect client ${client.client_id}`);
  button.addEventListener("click", () => disconnectClient(client.client_id));
  td.append(button);
  tr.append(td);
  return tr;
}

async function disconnectClient(id) {
  try {
    const reply = await fetch(`/v1/admin/clients/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders() });
    $("admin-note").textContent = reply.ok ? `Disconnected ${id} (close code 4001).` : explainStatus(reply.status, await readJson(reply));
  } catch (error) {
    $("admin-note").textContent = `Disconnect failed: ${error.message}`;
  }
  refreshAdmin();
}

// ----------------------------------------------------------------------------------------
// Wiring

document.addEventListener("DOMContentLoaded", () => {
  $("credential").value = credential();
  showCredentialKind();
  $("credential-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("credential").value.trim();
    if (value) sessionStorage.setItem(STORAGE_KEY, value); else sessionStorage.removeItem(STORAGE_KEY);
    showCredentialKind();
    refreshAdmin();
  });
  $("forget-credential").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE_KEY);
    $("credential").value = "";
    showCredentialKind();
    $("admin").hidden = true;
  });
  $("connect-form").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  $("disconnect").addEventListener("click", disconnect);
  $("subscribe-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const channels = $("subscribe-channels").value.split(",").map((s) => s.trim()).filter(Boolean);
    subscribeInBand(channels);
    $("subscribe-channels").value = "";
  });
  $("filter").addEventListener("input", applyFilter);
  $("pause").addEventListener("click", togglePause);
  $("clear").addEventListener("click", () => {
    state.events = [];
    state.pending = [];
    $("events").replaceChildren();
    $("detail").textContent = "Select an event to see its JSON.";
    updateCounts();
  });
  $("admin-refresh").addEventListener("click", refreshAdmin);
  setInterval(drawRates, 1000);
  updateCounts();
  refreshAdmin();
});
