// chat.js: the chat demo, a room on one channel, with herald.js.
//
// /chat?room=NAME follows chat.NAME (chat.lobby by default) and publishes
// each line typed as {"nick":"ada","text":"hello"} with client.publish().
// Every line Herald delivers on the channel is shown, the sender's own
// included. Whatever comes from the network is put in the page with
// textContent, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);

// A room is one channel token of a safe alphabet: no dots, no wildcards.
const roomPattern = /^[A-Za-z0-9_-]{1,64}$/;
const asked = new URLSearchParams(location.search).get("room");
const room = asked !== null && roomPattern.test(asked) ? asked : "lobby";
const channel = `chat.${room}`;

const fromFile = location.protocol === "file:";
const url = fromFile
  ? "ws://127.0.0.1:8080/ws"
  : `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;

const view = { state: "connecting", info: {}, everOpen: false, retryAt: 0, lostWith: "", lines: 0, refused: null };

// el makes an element holding text, as text.
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function storedNick() {
  try {
    return localStorage.getItem("herald-chat-nick");
  } catch {
    return null; // storage disabled
  }
}

const nickBox = $("#nick");
nickBox.value = storedNick() || `guest-${Math.floor(1000 + Math.random() * 9000)}`;

let client;
client = new HeraldClient(url, {
  channels: [channel],
  onstatechange(state, info) {
    view.state = state;
    view.info = info;
    if (state === "open") view.everOpen = true;
    if (state === "waiting") view.retryAt = Date.now() + info.delay;
    if (state === "waiting" && info.wasOpen) view.lostWith = `${info.code}${info.reason ? " " + info.reason : ""}`;
    render();
  },
  onconnected: render,
  onchannel: render,
  onmessage(_, data) {
    const line = el("li", undefined, "line");
    line.append(el("span", new Date().toLocaleTimeString(), "time"));
    if (typeof data?.nick === "string" && typeof data?.text === "string") {
      const nick = data.nick.slice(0, 32);
      line.dataset.nick = nick;
      if (nick === nickBox.value.trim()) line.classList.add("mine");
      line.append(el("span", nick, "nick"), el("span", data.text.slice(0, 2000), "text"));
    } else {
      line.append(el("span", "?", "nick"), el("span", JSON.stringify(data), "text")); // not a chat line: show what came
    }
    view.lines++;
    append(line);
  },
});

// append adds a line to the log, keeping the newest 500 and the view at the
// bottom unless the reader has scrolled up.
function append(line) {
  const log = $("#log");
  log.querySelector(".empty")?.remove();
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(line);
  while (log.children.length > 500) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
  document.body.dataset.lines = view.lines;
}

function showError(text) {
  append(el("li", text, "error"));
}

$("#send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const textBox = $("#text");
  const nick = nickBox.value.trim();
  const text = textBox.value.trim();
  if (nick === "" || text === "") return;
  try {
    localStorage.setItem("herald-chat-nick", nick);
  } catch {
    // not remembered, then
  }
  try {
    await client.publish(channel, { nick, text });
    view.refused = null;
    if (textBox.value.trim() === text) textBox.value = "";
  } catch (err) {
    if (err.code === "forbidden") view.refused = err.message;
    showError(`Not sent (${err.code}): ${err.message}`);
  }
  render();
  textBox.focus();
});

function render() {
  const { state, info } = view;
  document.body.dataset.state = state;
  const badge = $("#state");
  badge.className = `badge ${state}`;
  const seconds = Math.max(0, (view.retryAt - Date.now()) / 1000).toFixed(1);
  badge.textContent = {
    connecting: info.attempt ? `connecting… (attempt ${info.attempt + 1})` : "connecting…",
    open: "live",
    waiting: `reconnecting in ${seconds} s`,
    closed: "closed",
  }[state];

  const status = client ? client.channels.get(channel) : "pending";
  const li = el("li", channel, status === "subscribed" || status === "pending" ? status : "refused");
  li.title = status;
  $("#channels").replaceChildren(li);
  $("#me").textContent = client?.id ? `client ${client.id}${client.user ? `, user ${client.user}` : ", anonymous"}` : "–";
  $("#send button").disabled = state !== "open";

  const box = $("#notice");
  const notice = noticeParts(status, seconds);
  const key = JSON.stringify(notice);
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    // Parts in [brackets] are code; all of them text.
    box.replaceChildren(...notice.map((part) => (Array.isArray(part) ? el("code", part[0]) : part)));
    box.hidden = notice.length === 0;
  }
}

// noticeParts explains what is wrong, as text and [code] parts.
function noticeParts(status, seconds) {
  const { state, info } = view;
  const parts = [];
  if (asked !== null && asked !== room) {
    parts.push(`"${asked.slice(0, 80)}" is not a room name (letters, digits, - and _, at most 64): this is the lobby. `);
  }
  if (state === "waiting" && !view.everOpen) {
    parts.push("Cannot reach Herald at ", [url], `. Is it running? Start it with `, ["herald serve --public-publish 'chat.*'"], `. Retrying in ${seconds} s.`);
  } else if (state === "waiting") {
    parts.push(`Lost the connection to Herald (${view.lostWith}). Reconnecting in ${seconds} s, attempt ${info.attempt}.`);
  } else if (state === "open" && status !== "subscribed" && status !== "pending") {
    parts.push("Herald refused the subscription to ", [channel], `: ${status}.`);
  } else if (state === "open" && view.refused !== null) {
    parts.push(`Herald refused to publish to `, [channel], ` (forbidden: ${view.refused}). Anonymous pages may publish only where the server allows it: start it with `,
      ["herald serve --public-publish 'chat.*'"], ".");
  }
  return parts;
}

$("#server").textContent = url;
$("#sub-command").textContent = `herald sub '${url}?channel=${channel}'`;
setInterval(render, 250); // countdowns
render();
