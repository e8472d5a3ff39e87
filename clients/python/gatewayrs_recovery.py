"""Connection state recovery for gatewayrs WebSocket clients, on `websocket-client`.

The protocol is docs/recovery.md; this is one small implementation of it. A client connects
with ``gw_recover=1``, counts the data messages it receives, and after a drop reconnects with
``gw_resume=<token>&gw_received=<count>``: the gateway replays exactly what it missed, under
the same client id, or says plainly why it cannot (``not_recovered``) and opens a fresh
connection.

    client = RecoveringClient("ws://127.0.0.1:7272/")
    client.connect()
    print(client.client_id)
    text = client.recv()          # data messages only; control frames are handled here
    ...
    client.reconnect()            # after a drop: resumes, or starts fresh
    client.reconnect("ws://gw-2:7272/")   # ... or on another gateway of the cluster
    if not client.resumed:
        print("not recovered:", client.reason)

Control frames are text frames whose first character is NUL followed by JSON. A data text
message starting with NUL arrives with one more NUL in front; ``recv`` strips it.

Messages the client sent are kept (the last ``outbox`` of them): on a resume the gateway says
how many it took (``accepted``), and those it never read (still in flight when the connection
died, or when the gateway stopped) are sent again, in order, before ``reconnect`` returns.
``resent`` says how many; ``unsent_lost`` how many were needed but no longer kept.
"""

from collections import deque

import json
import socket
import struct
import urllib.parse

import websocket  # websocket-client

NUL = "\0"


class RecoveringClient:
    """One logical client across its WebSocket connections."""

    def __init__(self, url, ack_every=50, timeout=10, outbox=1000):
        self.url = url
        self.ack_every = ack_every
        self.timeout = timeout
        self.ws = None
        self.client_id = None
        self.token = None
        self.received = 0
        self.resumed = False
        self.replayed = 0
        self.reason = None
        self.detail = None
        self._acked = 0
        # Data messages sent across this client's connections, and the last of them.
        self.sent = 0
        self._outbox = deque(maxlen=outbox)
        self.resent = 0
        self.unsent_lost = 0

    def _url(self, params):
        parts = urllib.parse.urlsplit(self.url)
        query = parts.query + ("&" if parts.query else "") + urllib.parse.urlencode(params)
        return urllib.parse.urlunsplit(parts._replace(query=query))

    def connect(self):
        """A fresh connection asking for recovery."""
        self.received = 0
        self._acked = 0
        self.sent = 0
        self._outbox.clear()
        self._open({"gw_recover": "1"})

    def reconnect(self, url=None):
        """A new connection that resumes with the last token and count (or starts fresh if
        there is no token yet), to ``url`` if given (any gateway of the cluster: it relays the
        client to its home gateway), else to the same URL. Sets ``resumed``, ``replayed``,
        ``reason`` and ``detail``."""
        if url is not None:
            self.url = url
        if self.ws is not None:
            try:
                self.ws.close(timeout=0)
            except Exception:
                pass
            self.ws = None
        if self.token is None:
            return self.connect()
        self._open({"gw_recover": "1", "gw_resume": self.token, "gw_received": str(self.received)})

    def _open(self, params):
        self.resumed, self.replayed, self.reason, self.detail = False, 0, None, None
        self.resent, self.unsent_lost = 0, 0
        accepted = None
        self.ws = websocket.create_connection(self._url(params), timeout=self.timeout)
        while True:
            frame = self._control(self.ws.recv())
            kind = frame.get("type")
            if kind == "resumed":
                self.resumed = True
                self.replayed = frame["replayed"]
                accepted = frame.get("accepted")
            elif kind == "not_recovered":
                self.reason, self.detail = frame["reason"], frame.get("detail", "")
                self.received = 0
                self._acked = 0
                self.sent = 0
                self._outbox.clear()
            elif kind == "recovery":
                self.client_id = frame["client_id"]
                self.token = frame["token"]
                self.received = frame["received"]
                self._acked = min(self._acked, self.received)
                if accepted is not None:
                    self._resend(accepted)
                return
            else:
                raise ValueError("unexpected control frame %r" % (frame,))

    @staticmethod
    def _control(text):
        if not isinstance(text, str) or not text.startswith(NUL):
            raise ValueError("expected a control frame, got %r" % (text,))
        return json.loads(text[1:])

    def recv(self):
        """The next data message (str or bytes), counted. Acknowledges every ``ack_every``."""
        while True:
            msg = self.ws.recv()
            if isinstance(msg, str) and msg.startswith(NUL):
                if msg.startswith(NUL + NUL):
                    msg = msg[1:]
                else:
                    frame = self._control(msg)
                    if frame.get("type") == "recovery":
                        self.token = frame["token"]
                    continue
            self.received += 1
            if self.ack_every and self.received - self._acked >= self.ack_every:
                self.ack()
            return msg

    def _resend(self, accepted):
        """Sends again what the gateway did not take: messages ``accepted`` .. ``sent - 1``."""
        kept_from = self.sent - len(self._outbox)
        if accepted < kept_from:
            self.unsent_lost = kept_from - accepted
        for index, text in enumerate(list(self._outbox), start=kept_from):
            if index >= accepted:
                self.ws.send(text)
                self.resent += 1

    def ack(self):
        """Tells the gateway how many messages arrived, so it can let them go."""
        self.ws.send(NUL + json.dumps({"type": "ack", "received": self.received}))
        self._acked = self.received

    def send(self, text):
        """Sends a text message (one starting with NUL is escaped)."""
        if text.startswith(NUL):
            text = NUL + text
        self.sent += 1
        self._outbox.append(text)
        self.ws.send(text)

    def drop(self):
        """Drops the connection abruptly, without a close frame (a reset), as a lost network
        would; for tests."""
        sock = self.ws.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.ws = None

    def close(self):
        """A clean close: the gateway ends the client (no recovery)."""
        if self.ws is not None:
            self.ws.close()
            self.ws = None
