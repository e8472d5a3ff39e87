#!/usr/bin/env python3
"""A chat's business logic as an HTTP endpoint, standard library only: the `http` application of
the business worker POSTs every client event here and applies the answer.

  chat_endpoint.py            prints "LISTENING <port>" (port chosen by the OS), then serves

Events: connect (with handshake), message, close. Messages: {"type":"login","name","room"},
{"type":"say","content"}, "poison" (refused with 400), and numbered "c<i>-<n>" (echoed, for the
reload test). POST /control {"fail": N, "mode": "500"|"garbage"|"close"} makes the next N event
requests fail that way; GET /control answers the counters.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
state = {"fail": 0, "mode": "500", "events": 0, "failed": 0, "redelivered": 0}


def answer_for(event):
    kind = event["event"]
    cid = event["client_id"]
    session = event.get("session") or {}
    if kind == "connect":
        hs = event.get("handshake") or {}
        welcome = {"type": "welcome", "client_id": cid, "path": hs.get("path"), "query": hs.get("query"),
                   "protocol": event["server"]["protocol"], "redelivered": event["redelivered"]}
        return {"reply": [json.dumps(welcome)]}
    if kind == "close":
        if "room" in session:
            out = json.dumps({"type": "logout", "name": session["name"]})
            return {"calls": [{"call": "send_to_group", "args": {"group": session["room"], "message": out}}]}
        return {}
    msg = event["message"]
    if isinstance(msg, dict):  # binary: echo it back
        return {"reply": [msg]}
    if msg.startswith("c") and "-" in msg:
        return {"reply": [msg]}
    if msg == "poison":
        return None
    data = json.loads(msg)
    if data["type"] == "login":
        out = json.dumps({"type": "login", "name": data["name"]})
        return {
            "update_session": {"name": data["name"], "room": data["room"]},
            "calls": [
                {"call": "bind_uid", "args": {"client_id": cid, "uid": "user:" + data["name"]}},
                {"call": "join_group", "args": {"client_id": cid, "group": data["room"]}},
                {"call": "send_to_group", "args": {"group": data["room"], "message": out}},
            ],
        }
    if data["type"] == "say":
        out = json.dumps({"type": "say", "from": session.get("name"), "content": data["content"]})
        return {"calls": [{"call": "send_to_group", "args": {"group": session["room"], "message": out}}]}
    if data["type"] == "logout":
        return {"session": {}, "calls": [{"call": "close_client", "args": {"client_id": cid}}]}
    return {"reply": [json.dumps({"type": "error", "error": "unknown type"})]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        with lock:
            self.send(200, dict(state))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/control":
            with lock:
                state.update(json.loads(body))
            return self.send(200, {})
        with lock:
            state["events"] += 1
            event = json.loads(body)
            if event.get("redelivered"):
                state["redelivered"] += 1
            failing = state["fail"] > 0
            if failing:
                state["fail"] -= 1
                state["failed"] += 1
                mode = state["mode"]
        if failing:
            if mode == "close":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if mode == "garbage":
                return self.send(200, b"<html>not json")
            return self.send(500, {"error": "failing on purpose"})
        answer = answer_for(event)
        if answer is None:
            return self.send(400, {"error": "refused"})
        self.send(200, answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("LISTENING", server.server_address[1], flush=True)
server.serve_forever()
