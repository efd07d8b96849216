// app.js: the demo page, a ticker board drawn from herald.js callbacks.
//
// It follows prices.* (or the channels named in its own URL, as in
// /?channel=prices.AAPL&channel=prices.MSFT) and expects what `herald demo`
// publishes: {"sym":"AAPL","px":187.23,"chg":0.41,"ts":1732190000123}, where
// chg is the percent change of the day and ts the publish time in Unix ms.
"use strict";

const $ = (selector) => document.querySelector(selector);

const params = new URLSearchParams(location.search);
const channels = params.getAll("channel");
if (channels.length === 0) channels.push("prices.*");

// Served by Herald, the page connects back to the server it came from.
// Opened as a file it has no server to go back to, so it tries a Herald on
// the default address and says so.
const fromFile = location.protocol === "file:";
const url = fromFile
  ? "ws://127.0.0.1:8080/ws"
  : `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;

const view = {
  state: "connecting",
  info: {},
  everOpen: false,
  openSince: 0,
  retryAt: 0,
  lostWith: "", // close code and reason of the last connection that was up
  reconnects: 0,
  updates: 0,
  updatesSinceOpen: 0,
  rate: 0,
  latencies: [], // the latest ones, for the percentiles in the footer
  recovery: null, // after a reconnect on history channels: { messages, lost }
  rows: new Map(), // symbol -> { tr, cells, px, count }
};

// Declared apart: the client's first callback runs before its constructor
// returns, while a const would still be unreadable.
let client;
client = new HeraldClient(url, {
  channels,
  onstatechange(state, info) {
    view.state = state;
    view.info = info;
    if (state === "open") {
      if (view.everOpen) view.reconnects++;
      view.everOpen = true;
      view.openSince = Date.now();
      view.updatesSinceOpen = 0;
      view.recovery = null;
    }
    if (state === "waiting") view.retryAt = Date.now() + info.delay;
    // Later attempts fail with 1006 (no connection); keep why the good one ended.
    if (state === "waiting" && info.wasOpen) view.lostWith = `${info.code}${info.reason ? " " + info.reason : ""}`;
    render();
  },
  onchannel(channel, status, { recovered, replayed }) {
    // On history channels (herald serve --history 'prices.>') herald.js
    // resumes after a reconnect, and Herald replays what was missed.
    if (recovered !== undefined) {
      view.recovery ??= { messages: 0, lost: false };
      view.recovery.messages += replayed;
      view.recovery.lost ||= !recovered;
    }
    render();
  },
  onmessage: showPrice,
});

function showPrice(channel, data) {
  const now = Date.now();
  const sym = typeof data?.sym === "string" ? data.sym : channel.slice(channel.lastIndexOf(".") + 1);
  const row = view.rows.get(sym) ?? addRow(sym);
  const { cells } = row;
  if (typeof data?.px === "number") {
    const tick = row.px === undefined ? 0 : data.px - row.px;
    cells.px.textContent = data.px.toFixed(2);
    cells.tick.textContent = tick === 0 ? "·" : `${tick > 0 ? "▲" : "▼"} ${Math.abs(tick).toFixed(2)}`;
    cells.tick.className = tick > 0 ? "up" : tick < 0 ? "down" : "";
    if (tick !== 0) {
      const color = tick > 0 ? "rgba(46, 204, 113, 0.45)" : "rgba(231, 76, 60, 0.45)";
      cells.px.animate([{ backgroundColor: color }, { backgroundColor: "transparent" }], 700);
    }
    row.px = data.px;
  } else {
    cells.px.textContent = JSON.stringify(data); // not a price: show what came
  }
  if (typeof data?.chg === "number") {
    cells.day.textContent = `${data.chg > 0 ? "+" : ""}${data.chg.toFixed(2)}%`;
    cells.day.className = data.chg > 0 ? "up" : data.chg < 0 ? "down" : "";
  }
  if (typeof data?.ts === "number") {
    const latency = Math.max(0, now - data.ts);
    cells.latency.textContent = `${latency} ms`;
    view.latencies.push(latency);
    if (view.latencies.length > 500) view.latencies.splice(0, 100);
    row.tr.dataset.ts = data.ts;
  }
  cells.count.textContent = ++row.count;
  view.updates++;
  view.updatesSinceOpen++;
  document.body.dataset.updates = view.updates;
}

// addRow inserts a row for a new symbol, keeping the board sorted.
function addRow(sym) {
  const tbody = $("#board tbody");
  tbody.querySelector(".empty")?.remove();
  const tr = document.createElement("tr");
  tr.dataset.sym = sym;
  const cells = {};
  for (const name of ["sym", "px", "tick", "day", "latency", "count"]) {
    cells[name] = tr.insertCell();
    cells[name].className = name;
  }
  cells.sym.textContent = sym;
  const next = [...tbody.rows].find((other) => other.dataset.sym > sym);
  tbody.insertBefore(tr, next ?? null);
  const row = { tr, cells, px: undefined, count: 0 };
  view.rows.set(sym, row);
  return row;
}

function render() {
  const { state, info } = view;
  document.body.dataset.state = state;
  document.body.dataset.reconnects = view.reconnects;
  const badge = $("#state");
  badge.className = `badge ${state}`;
  const seconds = Math.max(0, (view.retryAt - Date.now()) / 1000).toFixed(1);
  badge.textContent = {
    connecting: info.attempt ? `connecting… (attempt ${info.attempt + 1})` : "connecting…",
    open: "live",
    waiting: `reconnecting in ${seconds} s`,
    closed: "closed",
  }[state];

  const subscriptions = client ? [...client.channels] : channels.map((channel) => [channel, "pending"]);
  const list = $("#channels");
  list.replaceChildren(
    ...subscriptions.map(([channel, status]) => {
      const li = document.createElement("li");
      li.textContent = channel;
      li.className = status === "subscribed" || status === "pending" ? status : "refused";
      li.title = status;
      return li;
    }),
  );

  const notice = noticeText(subscriptions, seconds);
  const box = $("#notice");
  if (box.dataset.html !== notice) {
    // Only on change, so that a link in the notice stays clickable.
    box.dataset.html = notice;
    box.innerHTML = notice;
    box.hidden = notice === "";
  }

  const recovery = $("#recovery");
  recovery.hidden = view.recovery === null;
  if (view.recovery !== null) {
    const { messages, lost } = view.recovery;
    recovery.textContent =
      `Reconnected: recovered ${messages} message${messages === 1 ? "" : "s"} published while away` +
      (lost ? ", but some are no longer stored: the board may miss updates until they come again." : ".");
    recovery.className = lost ? "notice" : "notice ok";
  }

  const sorted = [...view.latencies].sort((a, b) => a - b);
  const pct = (p) => (sorted.length ? `${sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]} ms` : "–");
  $("#stats").textContent =
    `${view.updates} updates · ${view.rate}/s · latency p50 ${pct(0.5)}, p99 ${pct(0.99)}` +
    ` · ${view.reconnects} reconnect${view.reconnects === 1 ? "" : "s"}`;
}

// noticeText explains what the page is waiting for, as HTML.
function noticeText(subscriptions, seconds) {
  const { state, info } = view;
  if (state === "waiting" && !view.everOpen) {
    return `Cannot reach Herald at <code>${esc(url)}</code>. Is it running? Start it with
      <code>herald serve</code>. Retrying in ${seconds} s.`;
  }
  if (state === "waiting") {
    return `Lost the connection to Herald (${esc(view.lostWith)}). Reconnecting in ${seconds} s, attempt ${info.attempt}.`;
  }
  if (state !== "open") return "";
  for (const [channel, status] of subscriptions) {
    if (status === "subscribed" || status === "pending") continue;
    let hint = "";
    if (status.startsWith("wildcards_disabled")) {
      hint = ` Name the symbols instead: <a href="?channel=prices.AAPL&amp;channel=prices.MSFT">?channel=prices.AAPL&amp;channel=prices.MSFT</a>.`;
    }
    return `Herald refused the subscription to <code>${esc(channel)}</code>: ${esc(status)}.${hint}`;
  }
  if (view.updatesSinceOpen === 0 && Date.now() - view.openSince > 3000) {
    return `Connected, but no prices yet. Publish some with <code>herald demo</code>.`;
  }
  return "";
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

$("#server").textContent = url;
$("#sub-command").textContent = `herald sub '${url}?${channels.map((c) => "channel=" + c).join("&")}'`;
$("#file-note").hidden = !fromFile;
let lastCount = 0;
setInterval(() => {
  view.rate = view.updates - lastCount;
  lastCount = view.updates;
}, 1000);
setInterval(render, 250); // countdowns and the idle notice
render();
