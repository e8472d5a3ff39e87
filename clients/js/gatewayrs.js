// gatewayrs.js: a WebSocket that survives drops, for gatewayrs gateways with [recovery] on.
// Plain browser JavaScript, no build step: <script src="gatewayrs.js"></script>.
//
// The protocol is docs/recovery.md. GatewayRsSocket connects with gw_recover=1, counts the data
// messages it receives, and when the connection drops it reconnects (with backoff) presenting
// its token and count: the gateway replays exactly what was missed, under the same client id,
// or says why it cannot (a fresh connection with a new client id follows).
//
//   const sock = new GatewayRsSocket("ws://127.0.0.1:7272/");
//   // or several gateways of one cluster: a connection attempt that fails moves on to the next,
//   // and the client resumes there (relayed to its home gateway, docs/recovery.md):
//   // new GatewayRsSocket(["wss://gw-1.example.com/", "wss://gw-2.example.com/"])
//   sock.onmessage = (data) => show(data);              // data messages only, in order, once
//   sock.onrecovery = ({ first, resumed, reason, clientId }) => {
//     if (!first && !resumed) rejoin();                  // state lost: a new client id
//   };
//   sock.send("hello");
//   sock.close();                                        // a clean close: no recovery
//
// Messages sent are kept (the last options.outbox, default 1000): on a resume the gateway says how
// many it took ("accepted"), and the ones it never read (in flight when the connection died or
// the gateway stopped) are sent again, in order (onrecovery's resent; unsentLost: needed but no
// longer kept).
(function (global) {
  "use strict";

  var NUL = "\u0000";

  function GatewayRsSocket(url, options) {
    options = options || {};
    this.urls = Array.isArray(url) ? url.slice() : [url];
    this.url = this.urls[0]; // the URL of the current (or next) connection
    this.ackEvery = options.ackEvery || 50;
    this.ackIntervalMs = options.ackIntervalMs || 5000;
    this.minBackoffMs = options.minBackoffMs || 250;
    this.maxBackoffMs = options.maxBackoffMs || 10000;
    this.protocols = options.protocols;
    this.outboxSize = options.outbox || 1000;
    this.sent = 0;       // data messages sent across this client's connections
    this._outbox = [];   // the last outboxSize of them
    this.clientId = null;
    this.token = null;
    this.received = 0;
    this.onmessage = null;   // function (data)
    // function ({first, resumed, replayed, reason, detail, clientId}): each time a connection is
    // ready. first: the very first one; resumed: the client came back with nothing lost; else
    // (not first, not resumed) a new client id, reason and detail say why.
    this.onrecovery = null;
    this.onopen = null;      // function ()
    this.onclose = null;     // function (event): only after close(), never on a drop
    this.ondrop = null;      // function (event): the connection dropped; a reconnect follows
    this._acked = 0;
    this._backoff = this.minBackoffMs;
    this._closed = false;
    this._pending = null;
    this._ws = null;
    this._timer = null;
    this._ackTimer = null;
    this._open();
  }

  GatewayRsSocket.prototype._query = function (params) {
    var sep = this.url.indexOf("?") >= 0 ? "&" : "?";
    var parts = [];
    for (var k in params) {
      if (Object.prototype.hasOwnProperty.call(params, k)) {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
      }
    }
    return this.url + sep + parts.join("&");
  };

  GatewayRsSocket.prototype._open = function () {
    var self = this;
    var params = { gw_recover: "1" };
    if (this.token) {
      params.gw_resume = this.token;
      params.gw_received = String(this.received);
    }
    var ws = this.protocols ? new WebSocket(this._query(params), this.protocols) : new WebSocket(this._query(params));
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._pending = { resumed: false, replayed: 0, accepted: null, reason: null, detail: null };
    var opened = false;
    ws.onopen = function () {
      opened = true;
      self._backoff = self.minBackoffMs;
      if (self.onopen) self.onopen();
    };
    ws.onmessage = function (ev) { self._receive(ev.data); };
    var ended = false;
    function end(ev) {
      if (ended || self._ws !== ws) return;
      ended = true;
      self._ws = null;
      clearInterval(self._ackTimer);
      if (self._closed) {
        if (self.onclose) self.onclose(ev);
        return;
      }
      // Dropped (or closed by the gateway): try again, with backoff and jitter. An attempt that
      // never opened moves on to the next gateway, if there are several.
      if (!opened && self.urls.length > 1) {
        self.url = self.urls[(self.urls.indexOf(self.url) + 1) % self.urls.length];
      }
      if (self.ondrop) self.ondrop(ev);
      var wait = self._backoff * (0.5 + Math.random() / 2);
      self._backoff = Math.min(self._backoff * 2, self.maxBackoffMs);
      self._timer = setTimeout(function () { self._open(); }, wait);
    }
    ws.onclose = end;
    // A connection that fails before it opens gets a close event after the error in browsers,
    // but not from every WebSocket implementation (Node 20's): the error ends it too.
    ws.onerror = function (ev) { if (!opened) end(ev); };
    this._ackTimer = setInterval(function () {
      if (self.received > self._acked) self.ack();
    }, this.ackIntervalMs);
  };

  GatewayRsSocket.prototype._receive = function (data) {
    if (typeof data === "string" && data.charAt(0) === NUL) {
      if (data.charAt(1) === NUL) {
        data = data.substring(1); // an escaped data message
      } else {
        this._control(JSON.parse(data.substring(1)));
        return;
      }
    }
    this.received += 1;
    if (this.received - this._acked >= this.ackEvery) this.ack();
    if (this.onmessage) this.onmessage(data);
  };

  GatewayRsSocket.prototype._control = function (frame) {
    var p = this._pending;
    if (frame.type === "resumed") {
      p.resumed = true;
      p.replayed = frame.replayed;
      if (typeof frame.accepted === "number") p.accepted = frame.accepted;
    } else if (frame.type === "not_recovered") {
      p.reason = frame.reason;
      p.detail = frame.detail;
    } else if (frame.type === "recovery") {
      var first = this.clientId === null;
      if (!p.resumed) {
        this.received = 0; // a new client: counting starts over
        this.sent = 0;
        this._outbox = [];
      }
      this._acked = Math.min(this._acked, this.received);
      this.clientId = frame.client_id;
      this.token = frame.token;
      var resent = { resent: 0, unsentLost: 0 };
      if (p.accepted !== null) resent = this._resend(p.accepted);
      if (this.onrecovery) {
        this.onrecovery({
          first: first, resumed: p.resumed, replayed: p.replayed, reason: p.reason, detail: p.detail, clientId: this.clientId,
          resent: resent.resent, unsentLost: resent.unsentLost
        });
      }
    }
  };

  // Sends again what the gateway did not take: messages accepted .. sent - 1.
  GatewayRsSocket.prototype._resend = function (accepted) {
    var keptFrom = this.sent - this._outbox.length;
    var out = { resent: 0, unsentLost: accepted < keptFrom ? keptFrom - accepted : 0 };
    for (var i = 0; i < this._outbox.length; i++) {
      if (keptFrom + i >= accepted) {
        this._ws.send(this._outbox[i]);
        out.resent += 1;
      }
    }
    return out;
  };

  // Tells the gateway how many messages arrived, so it can let them go (done every ackEvery
  // messages and every ackIntervalMs by itself).
  GatewayRsSocket.prototype.ack = function () {
    if (!this._ws || this._ws.readyState !== 1) return;
    this._ws.send(NUL + JSON.stringify({ type: "ack", received: this.received }));
    this._acked = this.received;
  };

  // Sends a text (escaped if it starts with NUL) or binary message. Returns false when not
  // connected at the moment (the message is not queued: the application decides).
  GatewayRsSocket.prototype.send = function (data) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    if (typeof data === "string" && data.charAt(0) === NUL) data = NUL + data;
    this.sent += 1;
    this._outbox.push(data);
    if (this._outbox.length > this.outboxSize) this._outbox.shift();
    this._ws.send(data);
    return true;
  };

  // The extensions the current connection agreed on ("" when none or not connected).
  GatewayRsSocket.prototype.extensions = function () {
    return this._ws ? this._ws.extensions : "";
  };

  // A clean close: the gateway ends the client at once (its on_close runs; no recovery).
  GatewayRsSocket.prototype.close = function (code, reason) {
    this._closed = true;
    clearTimeout(this._timer);
    clearInterval(this._ackTimer);
    if (this._ws) this._ws.close(code || 1000, reason || "");
  };

  global.GatewayRsSocket = GatewayRsSocket;
  if (typeof module !== "undefined" && module.exports) module.exports = GatewayRsSocket;
})(typeof window !== "undefined" ? window : this);
