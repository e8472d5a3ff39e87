"""Software nobody here wrote against our cluster: the official Pusher server SDK (PyPI `pusher`)
drives the HTTP API daemon, and pysher clients (PyPI `pysher`) on two gateways receive what it
publishes, each event exactly once; pysher clients on both gateways share one presence list
(users_info, user_count, member events once per user). Run by integration-tests/tests/pusher_sdk.rs, which starts
the cluster and passes its addresses. Exits non-zero with a message on the first failure.
"""

import argparse
import json
import sys
import threading
import time

import pusher
import pysher
import websocket

DEADLINE = 15.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def wait_for(what, cond, timeout=DEADLINE):
    """Polls `cond` until it is true (no sleep standing in for a condition)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    fail(f"timed out waiting for {what}")


class Listener:
    """A pysher client on one gateway that records every event it receives, per channel."""

    def __init__(self, name, key, host, port, secret="", user_data=None):
        self.name = name
        self.received = []  # (channel, event, data)
        self.lock = threading.Lock()
        self.connected = threading.Event()
        # With secret and user_data, pysher signs presence subscriptions itself.
        self.client = pysher.Pusher(key, secure=False, custom_host=host, port=port, secret=secret,
                                    user_data=user_data)
        self.client.connection.bind("pusher:connection_established", lambda _data: self.connected.set())
        self.client.connect()
        if not self.connected.wait(DEADLINE):
            fail(f"{name}: no pusher:connection_established")

    @property
    def socket_id(self):
        return self.client.connection.socket_id

    def subscribe(self, channel, auth=None, events=()):
        # pysher 1.0.8 sends the subscribe before it makes the channel object, so a fast
        # `subscription_succeeded` can reach no callback: the subscriptions are awaited through
        # the HTTP API's counts instead (below), before anything is published.
        ch = self.client.subscribe(channel, auth=auth)
        for event in events:
            ch.bind(event, lambda data, c=channel, e=event: self._record(c, e, data))

    def _record(self, channel, event, data):
        with self.lock:
            self.received.append((channel, event, data))

    def events(self, event):
        with self.lock:
            return [(c, json.loads(d)) for (c, e, d) in self.received if e == event]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True, help="host:port of the HTTP API")
    ap.add_argument("--ws1", required=True, help="host:port of gateway 1's Pusher listener")
    ap.add_argument("--ws2", required=True, help="host:port of gateway 2's Pusher listener")
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    a = ap.parse_args()

    api_host, api_port = a.api.rsplit(":", 1)
    sdk = pusher.Pusher(app_id=a.app_id, key=a.key, secret=a.secret, ssl=False, host=api_host, port=int(api_port))

    # A wrong secret is refused (401), and the SDK says so.
    wrong = pusher.Pusher(app_id=a.app_id, key=a.key, secret="not-the-secret-at-all", ssl=False, host=api_host,
                          port=int(api_port))
    try:
        wrong.trigger("news", "nope", {})
        fail("a request signed with the wrong secret was accepted")
    except pusher.errors.PusherBadAuth as e:
        if "Invalid signature" not in str(e):
            fail(f"401 without the reason: {e}")

    events = ("ev-public", "ev-both", "ev-batch", "ev-except", "ev-end")
    listeners = []
    for name, addr in (("gw1", a.ws1), ("gw2", a.ws2)):
        host, port = addr.rsplit(":", 1)
        listener = Listener(name, a.key, host, int(port))
        listener.subscribe("news", events=events)
        auth = sdk.authenticate(channel="private-orders", socket_id=listener.socket_id)["auth"]
        listener.subscribe("private-orders", auth=auth, events=events)
        listeners.append(listener)
    one, two = listeners

    # The API sees both subscriptions on both gateways before anything is published.
    def both_counted():
        info = sdk.channels_info(attributes=["subscription_count"])["channels"]
        return all(info.get(c, {}).get("subscription_count") == 2 for c in ("news", "private-orders"))

    wait_for("channels_info to count 2 subscriptions per channel", both_counted)
    info = sdk.channels_info(prefix_filter="private-", attributes=["subscription_count"])
    if info != {"channels": {"private-orders": {"subscription_count": 2}}}:
        fail(f"channels_info with prefix: {info}")
    info = sdk.channel_info("news", attributes=["subscription_count"])
    if info != {"occupied": True, "subscription_count": 2}:
        fail(f"channel_info: {info}")
    if sdk.channel_info("nobody-here") != {"occupied": False}:
        fail("an empty channel is occupied")

    sdk.trigger("news", "ev-public", {"n": 1})
    sdk.trigger(["news", "private-orders"], "ev-both", {"n": 2})
    sdk.trigger_batch([
        {"channel": "news", "name": "ev-batch", "data": {"n": 3}},
        {"channel": "private-orders", "name": "ev-batch", "data": {"n": 4}},
    ])
    # With socket_id: everyone but that socket (on gateway 1) gets it.
    sdk.trigger("news", "ev-except", {"n": 5}, socket_id=one.socket_id)
    sdk.trigger(["news", "private-orders"], "ev-end", {"n": 6})
    for listener in listeners:
        wait_for(f"{listener.name}: the last events", lambda lis=listener: len(lis.events("ev-end")) == 2)

    for listener in listeners:
        got = {e: sorted(listener.events(e), key=lambda x: x[0]) for e in events}
        want = {
            "ev-public": [("news", {"n": 1})],
            "ev-both": [("news", {"n": 2}), ("private-orders", {"n": 2})],
            "ev-batch": [("news", {"n": 3}), ("private-orders", {"n": 4})],
            "ev-except": [] if listener is one else [("news", {"n": 5})],
            "ev-end": [("news", {"n": 6}), ("private-orders", {"n": 6})],
        }
        if got != want:
            fail(f"{listener.name} received {got}, expected exactly {want}")

    presence(sdk, a)

    # A signed-in user's connections are closed by terminate_user_connections (code 4009).
    ws1_host, ws1_port = a.ws1.rsplit(":", 1)
    ws = websocket.create_connection(f"ws://{a.ws1}/app/{a.key}?protocol=7", timeout=DEADLINE)
    established = json.loads(ws.recv())
    socket_id = json.loads(established["data"])["socket_id"]
    signin = sdk.authenticate_user(socket_id, {"id": "ann", "user_info": {"name": "Ann"}})
    ws.send(json.dumps({"event": "pusher:signin", "data": signin}))
    answer = json.loads(ws.recv())
    if answer["event"] != "pusher:signin_success":
        fail(f"sign-in: {answer}")
    sdk.terminate_user_connections("ann")
    opcode, frame = ws.recv_data(control_frame=True)
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, frame = ws.recv_data(control_frame=True)
    code = int.from_bytes(frame[:2], "big")
    if code != 4009:
        fail(f"terminate_user_connections closed with {code}, expected 4009")

    for listener in listeners:
        listener.client.disconnect(timeout=2)
    print("OK: the Pusher SDK published through the HTTP API and pysher received each event exactly once;"
          " one presence list over two gateways")


def presence(sdk, a):
    """A presence channel over both gateways has one member list, decided by its home gateway:
    ann on gateway 1, bob on gateway 2 and again on gateway 1. The SDK's users_info and
    channel_info count each user once; ann hears bob added once and removed once, when his last
    connection anywhere leaves."""
    room = "presence-room"
    member_events = ("pusher_internal:member_added", "pusher_internal:member_removed")

    def join(name, addr, user):
        host, port = addr.rsplit(":", 1)
        listener = Listener(name, a.key, host, int(port), secret=a.secret,
                            user_data={"user_id": user, "user_info": {"name": user}})
        listener.subscribe(room, events=member_events)
        return listener

    def users():
        return sorted(u["id"] for u in sdk.users_info(room)["users"])

    def counts():
        return sdk.channel_info(room, attributes=["user_count", "subscription_count"])

    ann = join("ann@gw1", a.ws1, "ann")
    wait_for("users_info to list ann", lambda: users() == ["ann"])
    bob = join("bob@gw2", a.ws2, "bob")
    bob_again = join("bob@gw1", a.ws1, "bob")
    want = {"occupied": True, "user_count": 2, "subscription_count": 3}
    wait_for("channel_info to count 2 users in 3 subscriptions", lambda: counts() == want)
    if users() != ["ann", "bob"]:
        fail(f"users_info: {users()}")
    wait_for("ann to hear bob added", lambda: len(ann.events("pusher_internal:member_added")) == 1)

    bob.client.disconnect(timeout=2)
    wait_for("bob's connection on gateway 2 gone", lambda: counts()["subscription_count"] == 2)
    if ann.events("pusher_internal:member_removed"):
        fail("bob was removed while still connected on gateway 1")
    bob_again.client.disconnect(timeout=2)
    wait_for("ann to hear bob removed", lambda: len(ann.events("pusher_internal:member_removed")) == 1)
    wait_for("users_info to list ann alone", lambda: users() == ["ann"])
    added = ann.events("pusher_internal:member_added")
    removed = ann.events("pusher_internal:member_removed")
    if added != [(room, {"user_id": "bob", "user_info": {"name": "bob"}})] or removed != [(room, {"user_id": "bob"})]:
        fail(f"ann heard added {added}, removed {removed}: each once expected")
    ann.client.disconnect(timeout=2)


if __name__ == "__main__":
    main()
