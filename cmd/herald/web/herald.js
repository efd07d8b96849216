// herald.js: a small Herald client for browsers, on the WebSocket API alone.
//
//   const client = new HeraldClient("ws://127.0.0.1:8080/ws", {
//     channels: ["prices.*"],
//     onmessage: (channel, data) => console.log(channel, data),
//   });
//
// Channels are subscribed in band, {"op":"subscribe"}, so that each one gets
// an answer (onchannel) and all of them are subscribed again after every
// reconnect. A lost connection is retried with exponential backoff and full
// jitter: after the n-th failure in a row it waits a random time between 0
// and min(maxDelay, minDelay * 2^n), so that the thousands of pages one
// server restart cuts off do not all come back in the same instant.
class HeraldClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = { minDelay: 500, maxDelay: 30000, heartbeat: 20000, ...options };
    this.channels = new Map(); // channel -> "pending", "subscribed" or an error
    this.attempt = 0; // failed connections since the last good one
    this.closed = false;
    this.ws = null;
    for (const channel of this.options.channels ?? []) this.channels.set(channel, "pending");
    this._connect();
  }

  subscribe(channel) {
    this.channels.set(channel, "pending");
    this._send({ op: "subscribe", channel, id: channel });
  }

  unsubscribe(channel) {
    this.channels.delete(channel);
    this._send({ op: "unsubscribe", channel });
  }

  // close disconnects for good.
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this._lost(this.ws, 1000, "closed by the page");
    else this._emit("onstatechange", "closed", {});
  }

  _connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.openedAt = 0;
    this._emit("onstatechange", "connecting", { attempt: this.attempt });
    ws.onopen = () => {
      this.openedAt = Date.now();
      this._emit("onstatechange", "open", {});
      for (const channel of this.channels.keys()) this.subscribe(channel);
      this._alive();
    };
    ws.onmessage = (event) => {
      this._alive();
      this._receive(event.data);
    };
    // The browser hides why a connection failed (refused, DNS, HTTP 503):
    // onerror carries no detail and is always followed by onclose.
    ws.onclose = (event) => this._lost(ws, event.code, event.reason);
  }

  _receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      msg = null;
    }
    if (msg === null || typeof msg !== "object") return; // raw payloads (?format=raw) are not for this client
    if (msg.op === "ack" || msg.op === "error") {
      // Subscriptions use their channel as id; other answers have none.
      if (msg.id === undefined || !this.channels.has(msg.id)) return;
      const status = msg.op === "ack" ? "subscribed" : `${msg.code}: ${msg.message}`;
      this.channels.set(msg.id, status);
      this._emit("onchannel", msg.id, status);
    } else if (msg.op === undefined) {
      this._emit("onmessage", msg.channel, msg.data);
    }
  }

  // _alive runs on every message. Browsers answer the server's pings but
  // cannot send their own, so after a quiet spell the client sends an
  // application ping, {"op":"ping"}, and gives the connection up if the
  // server stays silent: a dead network can otherwise go unnoticed for
  // many minutes.
  _alive() {
    const ws = this.ws;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this._send({ op: "ping" });
      this.heartbeatTimer = setTimeout(() => this._lost(ws, 4000, "no answer to ping"), this.options.heartbeat);
    }, this.options.heartbeat);
  }

  _lost(ws, code, reason) {
    if (ws !== this.ws) return; // an old socket, already given up
    this.ws = null;
    ws.onclose = ws.onmessage = null;
    ws.close();
    clearTimeout(this.heartbeatTimer);
    for (const channel of this.channels.keys()) this.channels.set(channel, "pending");
    const wasOpen = this.openedAt > 0;
    if (this.closed) {
      this._emit("onstatechange", "closed", { code, reason, wasOpen });
      return;
    }
    // A connection that lasted was a success: start the backoff afresh.
    if (wasOpen && Date.now() - this.openedAt > 10000) this.attempt = 0;
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this.attempt);
    const delay = Math.random() * ceiling;
    this.attempt++;
    this._emit("onstatechange", "waiting", { code, reason, wasOpen, delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  _emit(callback, ...args) {
    if (this.options[callback]) this.options[callback](...args);
  }
}
