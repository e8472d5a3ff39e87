#!/usr/bin/env python3
"""Drives every endpoint of the HTTP push API with `requests`, against a real cluster, with
WebSocket clients (`websocket-client`) checking what they receive.

Run by http-api/tests/python.rs, which starts the cluster and passes the addresses:
  push_api.py --api URL --api2 URL --ws URL --ws2 URL --key KEY --read-key KEY --send-key KEY
Exits 0 and prints "PASS <n> checks" when everything holds; any failure raises.
"""
import argparse
import base64
import json
import sys
import time

import requests
import websocket

ap = argparse.ArgumentParser()
for a in ("--api", "--api2", "--ws", "--ws2", "--key", "--read-key", "--send-key"):
    ap.add_argument(a, required=True)
args = ap.parse_args()
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


session = requests.Session()  # keep-alive
session.headers["Authorization"] = "Bearer " + args.key


def call(name, api=None, status=200, key=None, **body):
    headers = {"Authorization": "Bearer " + key} if key else {}
    r = session.post(f"{api or args.api}/v1/{name}", json=body, headers=headers, timeout=20)
    check(r.status_code == status, f"{name} {body}: status {r.status_code}, expected {status}: {r.text}")
    return r.json()


def value(name, **body):
    reply = call(name, **body)
    check(reply["missing"] == [], f"{name}: gateways missing: {reply}")
    return reply["value"]


class Client:
    """A WebSocket client; the worker sends its client id first."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=10)
        self.id = self.ws.recv()

    def recv(self):
        op, data = self.ws.recv_data()
        return (data if op == websocket.ABNF.OPCODE_BINARY else data.decode()), op

    def text(self):
        data, op = self.recv()
        check(op == websocket.ABNF.OPCODE_TEXT, f"expected text, got opcode {op}")
        return data

    def nothing(self):
        """Nothing more arrives: a marker sent now is the next message."""
        marker = f"marker-{time.monotonic_ns()}"
        value("send_to_client", client_id=self.id, message=marker)
        got = self.text()
        check(got == marker, f"{self.id} got {got!r} before the marker")


# Clients on both gateways.
a1, a2 = Client(args.ws), Client(args.ws)
b1, b2 = Client(args.ws2), Client(args.ws2)
everyone = [a1, a2, b1, b2]
check(value("get_all_client_count") == 4, "4 clients")
check(sorted(value("get_all_client_ids")) == sorted(c.id for c in everyone), "all client ids")
for c in everyone:
    check(value("is_online", client_id=c.id) is True, "online")

# Sending: to one client, several, everyone (with exclusions), text and binary.
value("send_to_client", client_id=a1.id, message="one")
check(a1.text() == "one", "send_to_client")
value("send_to_client", client_id=b1.id, message={"base64": base64.b64encode(b"\x00\x01\xff").decode()})
data, op = b1.recv()
check(op == websocket.ABNF.OPCODE_BINARY and data == b"\x00\x01\xff", f"binary frame: {op} {data!r}")
value("send_to_clients", client_ids=[a2.id, b2.id, a2.id], message="some")
check(a2.text() == "some" and b2.text() == "some", "send_to_clients, once each")
value("send_to_all", message="all")
for c in everyone:
    check(c.text() == "all", "send_to_all")
value("send_to_all", message="all-but", exclude=[a1.id, b2.id])
check(a2.text() == "all-but" and b1.text() == "all-but", "send_to_all with exclude")
a1.nothing()
b2.nothing()

# Uids.
value("bind_uid", client_id=a1.id, uid="ann")
value("bind_uid", client_id=b1.id, uid="ann")
value("bind_uid", client_id=a2.id, uid="bob")
check(value("get_uid_by_client_id", client_id=a1.id) == "ann", "uid of a1")
check(value("get_uid_by_client_id", client_id=b2.id) is None, "b2 has no uid")
check(value("is_uid_online", uid="ann") is True and value("is_uid_online", uid="zed") is False, "is_uid_online")
check(value("are_uids_online", uids=["ann", "zed"]) == {"ann": True, "zed": False}, "are_uids_online")
check(sorted(value("get_client_ids_by_uid", uid="ann")) == sorted([a1.id, b1.id]), "ids of ann")
check(value("get_client_ids_by_uids", uids=["bob", "zed"]) == {"bob": [a2.id], "zed": []}, "ids by uids")
check(value("get_all_uids") == ["ann", "bob"] and value("get_all_uid_count") == 2, "all uids")
value("send_to_uid", uid="ann", message="to-ann")
check(a1.text() == "to-ann" and b1.text() == "to-ann", "send_to_uid reaches both gateways")
value("send_to_uids", uids=["ann", "bob"], message="to-both")
for c in (a1, b1, a2):
    check(c.text() == "to-both", "send_to_uids")
b2.nothing()
value("unbind_uid", client_id=b1.id, uid="bob")  # not its uid: nothing changes
check(value("get_uid_by_client_id", client_id=b1.id) == "ann", "unbind_uid honours its uid")
value("unbind_uid", client_id=b1.id, uid="ann")
check(value("get_client_ids_by_uid", uid="ann") == [a1.id], "unbound")

# Groups.
value("join_group", client_id=a1.id, group="room")
value("join_group", client_id=b1.id, group="room")
value("join_group", client_id=b1.id, group="lobby")
value("join_group", client_id=b2.id, group="lobby")
check(sorted(value("get_client_ids_by_group", group="room")) == sorted([a1.id, b1.id]), "members")
check(value("get_client_count_by_group", group="lobby") == 2, "count")
check(value("get_client_count_by_groups", groups=["room", "lobby", "none"]) == {"room": 2, "lobby": 2, "none": 0}, "counts")
check(value("get_uids_by_group", group="room") == ["ann"] and value("get_uid_count_by_group", group="room") == 1, "uids of room")
check(value("get_all_group_ids") == ["lobby", "room"], "group ids")
lists = value("get_all_group_client_id_lists")
check(sorted(lists["lobby"]) == sorted([b1.id, b2.id]), f"group lists {lists}")
check(value("get_all_group_client_id_counts") == {"lobby": 2, "room": 2}, "group counts")
check(value("get_all_group_uid_lists") == {"lobby": [], "room": ["ann"]}, "group uid lists")
check(value("get_all_group_uid_counts") == {"lobby": 0, "room": 1}, "group uid counts")
value("send_to_group", group="room", message="room-msg", exclude=[a1.id])
check(b1.text() == "room-msg", "send_to_group with exclude")
a1.nothing()
value("send_to_groups", groups=["room", "lobby"], message="rooms")
for c in (a1, b1, b2):
    check(c.text() == "rooms", "send_to_groups")
b1.nothing()  # in both groups, got it once
value("leave_group", client_id=b1.id, group="room")
check(value("get_client_ids_by_group", group="room") == [a1.id], "left")
value("ungroup", group="lobby")
check(value("get_client_count_by_group", group="lobby") == 0, "ungrouped")

# Sessions.
value("set_session", client_id=a1.id, session={"name": "Ann", "cart": {"items": 1}})
check(value("get_session", client_id=a1.id) == {"name": "Ann", "cart": {"items": 1}}, "set_session")
value("update_session", client_id=a1.id, session={"cart": {"items": 2}, "name": None})
check(value("get_session", client_id=a1.id) == {"cart": {"items": 2}}, "update_session merges, null deletes")
sessions = value("get_all_client_sessions")
check(sessions[a1.id] == {"cart": {"items": 2}} and sessions[b2.id] == {}, f"all sessions {sessions}")
check(list(value("get_client_sessions_by_group", group="room")) == [a1.id], "sessions by group")

# Batch: in order, one result per call, a failed call does not stop the rest.
r = call("batch", calls=[
    {"call": "bind_uid", "args": {"client_id": b2.id, "uid": "cy"}},
    {"call": "send_to_uid", "args": {"uid": "cy", "message": "batched"}},
    {"call": "get_uid_by_client_id", "args": {"client_id": b2.id}},
    {"call": "get_all_uid_count"},
])
check([x.get("value") for x in r["results"]] == [None, None, "cy", 3], f"batch {r}")
check(b2.text() == "batched", "batch send")

# The second API copy shares nothing and sees the same cluster.
r = call("get_all_uids", api=args.api2)
check(r["value"] == ["ann", "bob", "cy"] and r["missing"] == [], "second copy")
call("send_to_uid", api=args.api2, uid="bob", message="via-2")
check(a2.text() == "via-2", "push via the second copy")

# Keys: read-only and send-only.
call("get_all_uids", key=args.read_key)
call("send_to_all", key=args.read_key, status=403, message="no")
call("send_to_uid", key=args.send_key, uid="bob", message="sent")
check(a2.text() == "sent", "send key")
call("get_all_uids", key=args.send_key, status=403)
r = requests.post(f"{args.api}/v1/get_all_uids", json={}, timeout=10)
check(r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", "no key")

# Closing: close_uid, close_client (last message, code, reason), destroy_client.
value("close_client", client_id=a2.id, message="bye", code=4000, reason="kicked")
check(a2.text() == "bye", "last message")
op, data = a2.ws.recv_data(control_frame=True)
check(op == websocket.ABNF.OPCODE_CLOSE, f"close frame expected, got opcode {op}")
check(int.from_bytes(data[:2], "big") == 4000 and data[2:] == b"kicked", f"close code and reason: {data!r}")
value("close_uid", uid="cy")
value("destroy_client", client_id=b1.id)
deadline = time.time() + 10
while time.time() < deadline and value("get_all_client_count") != 1:
    time.sleep(0.05)
check(value("get_all_client_ids") == [a1.id], "only a1 left")
check(value("is_online", client_id=b1.id) is False, "destroyed")
r = call("send_to_client", status=200, client_id=b1.id, message="gone")  # a no-op, counted by the gateway

# Errors name the field; the OpenAPI document lists every route used above.
r = call("send_to_uid", status=400, uid=5, message="x")
check(r["error"]["field"] == "uid", f"{r}")
doc = requests.get(f"{args.api}/openapi.json", timeout=10).json()
check(len(doc["paths"]) == 41, "41 paths")
print(f"PASS {checks} checks")
