// herald.js: a small Herald client for browsers, on the WebSocket API alone.
//
//   const client = new HeraldClient("ws://127.0.0.1:8080/ws", {
//     channels: ["prices.*"],
//     onmessage: (channel, data, seq) => console.log(channel, data),
//   });
//
// Channels are subscribed in band, {"op":"subscribe"}, so that each one gets
// an answer (onchannel) and all of them are subscribed again after every
// reconnect. On a history channel (herald serve --history) each message
// carries its stream sequence, seq, and each subscribe's ack the stream's
// epoch: the client keeps both for every channel and subscribes again with
// {"since":seq,"epoch":epoch}, so that Herald first replays what was missed. A lost connection is retried with exponential backoff and full
// jitter: after the n-th failure in a row it waits a random time between 0
// and min(maxDelay, minDelay * 2^n), so that the thousands of pages one
// server restart cuts off do not all come back in the same instant.
//
// The token option, a string or an async function, goes in ?token=. A
// function is called before each connection, and again some time before the
// token expires, so that the connection carries on with a fresh one
// ({"op":"refresh"}) instead of being closed with 4001.
class HeraldClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = { minDelay: 500, maxDelay: 30000, heartbeat: 20000, ...options };
    this.channels = new Map(); // channel -> "pending", "subscribed" or an error
    this.positions = new Map(); // channel -> { seq, epoch, ... } on history channels
    this.pending = new Map(); // request id -> the function its answer goes to
    this.lastId = 0;
    this.attempt = 0; // failed connections since the last good one
    this.closed = false;
    this.ws = null;
    this.id = this.user = null; // from Herald's greeting, once connected
    this.expires = 0; // the token's expiry, Unix seconds; 0 without one
    for (const channel of this.options.channels ?? []) this.channels.set(channel, "pending");
    this._connect();
  }

  subscribe(channel) {
    this.channels.set(channel, "pending");
    const pos = this.positions.get(channel);
    const resume = pos?.seq !== undefined ? { since: pos.seq, epoch: pos.epoch } : {};
    if (pos) Object.assign(pos, { resuming: "since" in resume, replayed: 0, replayMax: 0 });
    this._send({ op: "subscribe", channel, id: channel, ...resume });
  }

  unsubscribe(channel) {
    this.channels.delete(channel);
    this.positions.delete(channel);
    this._send({ op: "unsubscribe", channel });
  }

  // publish sends data (any JSON value) to channel. The promise resolves
  // when Herald has handed it to NATS and rejects with an Error whose code
  // is Herald's (forbidden, rate_limited, too_large, ...) or "disconnected":
  // not connected, or the connection dropped before the answer.
  publish(channel, data) {
    return new Promise((resolve, reject) => {
      if (!this._open()) return reject(this._error("disconnected", "not connected to Herald"));
      this._request({ op: "publish", channel, data }, (msg) => {
        if (msg?.op === "ack") resolve();
        else reject(msg ? this._error(msg.code, msg.message) : this._error("disconnected", "the connection dropped before Herald answered"));
      });
    });
  }

  // close disconnects for good.
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this._lost(this.ws, 1000, "closed by the page");
    else this._emit("onstatechange", "closed", {});
  }

  _connect() {
    this._emit("onstatechange", "connecting", { attempt: this.attempt });
    Promise.resolve()
      .then(() => (typeof this.options.token === "function" ? this.options.token() : this.options.token))
      .then(
        (token) => this.closed || this._dial(token),
        (err) => this.closed || this._retry({ code: 0, reason: `no token: ${err?.message ?? err}`, wasOpen: false }),
      );
  }

  _dial(token) {
    const url = token ? `${this.url}${this.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : this.url;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.openedAt = 0;
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
    // The browser hides why a connection failed (refused, DNS, HTTP 401):
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
    if (msg.op === "connected") {
      // Herald's greeting: who this connection is, and until when.
      ({ client: this.id, user: this.user, expires: this.expires } = msg);
      this._refreshLater();
      this._emit("onconnected", { id: this.id, user: this.user, expires: this.expires });
    } else if (msg.op === "ack" || msg.op === "error") {
      // Publishes and refreshes have numbers for ids, subscriptions their
      // channel; a subscription Herald dropped has its channel and no id.
      const answer = this.pending.get(msg.id);
      if (answer) {
        this.pending.delete(msg.id);
        return answer(msg);
      }
      const channel = msg.id ?? msg.channel;
      if (channel === undefined || !this.channels.has(channel)) return;
      const status = msg.op === "ack" ? "subscribed" : `${msg.code}: ${msg.message}`;
      this.channels.set(channel, status);
      this._emit("onchannel", channel, status, msg.op === "ack" ? this._resumed(channel, msg) : {});
    } else if (msg.op === undefined) {
      if (typeof msg.channel === "string" && Number.isSafeInteger(msg.seq)) this._saw(msg.channel, msg.seq);
      this._emit("onmessage", msg.channel, msg.data, msg.seq);
    }
  }

  // _saw moves the position of every channel that a message on subject
  // reached to its seq; before a subscribe's ack it is part of the replay.
  _saw(subject, seq) {
    for (const [channel, status] of this.channels) {
      if (!this._covers(channel, subject)) continue;
      const pos = this.positions.get(channel) ?? { replayed: 0, replayMax: 0 };
      this.positions.set(channel, pos);
      pos.seq = Math.max(pos.seq ?? 0, seq);
      if (status === "pending") {
        pos.replayed++;
        pos.replayMax = Math.max(pos.replayMax, seq);
      }
    }
  }

  // _resumed takes the epoch of a subscribe's ack and returns what
  // onchannel reports of it: {recovered, replayed} for a resume, where
  // recovered false means that some messages are lost, {} otherwise. A
  // resume answered with another epoch found a recreated stream, whose
  // sequences started again: the position is the replay's last message.
  _resumed(channel, { epoch, recovered }) {
    const pos = this.positions.get(channel);
    if (!pos) {
      if (epoch !== undefined) this.positions.set(channel, { epoch, replayed: 0, replayMax: 0 });
      return {};
    }
    const { resuming } = pos;
    pos.resuming = false;
    if (resuming && pos.epoch !== undefined && epoch !== undefined && epoch !== pos.epoch) pos.seq = pos.replayMax;
    if (epoch !== undefined) pos.epoch = epoch;
    return resuming ? { recovered, replayed: pos.replayed } : {};
  }

  // _covers reports whether channel, a subject or a pattern (* is one
  // token, > the rest), covers subject.
  _covers(channel, subject) {
    if (channel === subject) return true;
    const p = channel.split("."), s = subject.split(".");
    for (let i = 0; i < p.length; i++) {
      if (p[i] === ">") return i < s.length;
      if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
    }
    return p.length === s.length;
  }

  // _refreshLater plans the next refresh: at 80 to 90% of the token's life
  // left, or 30 s before it ends if that is sooner, but not before half of
  // it, nor within 5 s (a clock far off must not make it spin).
  _refreshLater() {
    clearTimeout(this.refreshTimer);
    if (typeof this.options.token !== "function" || !(this.expires > 0)) return;
    const left = this.expires * 1000 - Date.now();
    const at = Math.min(left * (0.8 + 0.1 * Math.random()), left - 30000);
    const delay = Math.max(at, left * (0.5 + 0.1 * Math.random()), 5000);
    this.refreshTimer = setTimeout(() => this._refresh(), Math.min(delay, 2 ** 31 - 1));
  }

  async _refresh() {
    const ws = this.ws;
    let token;
    try {
      token = await this.options.token();
    } catch (err) {
      this._emit("onrefresh", { expires: this.expires, error: this._error("no_token", String(err?.message ?? err)) });
      return this._refreshLater();
    }
    if (ws !== this.ws || !this._open()) return; // the next connection gets a token of its own
    this._request({ op: "refresh", token }, (msg) => {
      if (!msg) return;
      if (msg.op === "ack") this.expires = msg.expires;
      this._emit("onrefresh", { expires: this.expires, error: msg.op === "ack" ? null : this._error(msg.code, msg.message) });
      this._refreshLater(); // after a refusal, try again before the old token ends
    });
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
    clearTimeout(this.refreshTimer);
    for (const channel of this.channels.keys()) this.channels.set(channel, "pending");
    const answers = [...this.pending.values()];
    this.pending.clear();
    for (const answer of answers) answer(null);
    const wasOpen = this.openedAt > 0;
    if (this.closed) {
      this._emit("onstatechange", "closed", { code, reason, wasOpen });
      return;
    }
    // A connection that lasted was a success: start the backoff afresh.
    // After 4001 (token expired) the next attempt fetches a new token.
    if (wasOpen && Date.now() - this.openedAt > 10000) this.attempt = 0;
    this._retry({ code, reason, wasOpen });
  }

  _retry(info) {
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this.attempt);
    const delay = Math.random() * ceiling;
    this.attempt++;
    this._emit("onstatechange", "waiting", { ...info, delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _request(msg, answer) {
    const id = ++this.lastId;
    this.pending.set(id, answer);
    this._send({ ...msg, id });
  }

  _open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  _send(msg) {
    if (this._open()) this.ws.send(JSON.stringify(msg));
  }

  _emit(callback, ...args) {
    if (this.options[callback]) this.options[callback](...args);
  }

  // _error is an Error with Herald's code: err.code, err.message.
  _error(code, message) {
    return Object.assign(new Error(message), { code });
  }
}
