#!/usr/bin/env python3
"""Test vectors from Pusher's official Python server SDK (PyPI `pusher`), for
pusher-protocol/tests/sdk_vectors.rs.

  python3 sdk_vectors.py > fixtures/sdk_vectors.json   # regenerate the committed fixtures
  python3 sdk_vectors.py validate-webhook              # stdin: {"key", "signature", "body"};
                                                       # prints the SDK's verdict, exit 1 if refused

The SDK computes every value here: subscription and sign-in `auth` strings, HTTP API requests
signed as it sends them (the wire URL as `requests` prepares it, so escaping is the SDK's own),
and webhook signatures. Its clock is pinned so the output is the same on every run.
"""

import json
import sys
import time
from unittest import mock

import pusher
import requests
from pusher.signature import sign

APP_ID = "3"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
MASTER_KEY = "VGhpcyBpcyBhIDMyIGJ5dGUgbWFzdGVyIGtleSEhISE="  # "This is a 32 byte master key!!!!"
TIMESTAMP = 1353088179


def client():
    return pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host="127.0.0.1", port=8080, ssl=False,
                         encryption_master_key_base64=MASTER_KEY)


def wire(req):
    """An SDK request as it goes on the wire: method, path, raw query, body."""
    url = requests.Request(req.method, req.url).prepare().url
    path_and_query = url.split("127.0.0.1:8080", 1)[1]
    path, _, query = path_and_query.partition("?")
    return {
        "method": req.method,
        "path": path,
        "query": query,
        "body": req.body.decode("utf-8"),
        "auth_signature": req.query_params["auth_signature"],
    }


def generate():
    p = client()
    pc = p._pusher_client
    with mock.patch("time.time", return_value=TIMESTAMP):
        http = {
            "trigger": pc.trigger.make_request(["project-3"], "foo", {"some": "data"}),
            "trigger_many_with_socket_id": pc.trigger.make_request(
                ["a", "private-b", "presence-c"], "ev", "plain text", "1234.5678"),
            "trigger_batch": pc.trigger_batch.make_request([
                {"channel": "a", "name": "e1", "data": {"n": 1}},
                {"channel": "private-b", "name": "e2", "data": "two", "socket_id": "1.2"},
            ]),
            "send_to_user": pc.trigger.make_request(["#server-to-user-user-42"], "hello", {"to": "you"}),
            "channels_info": pc.channels_info.make_request("presence-", ["user_count"]),
            "channels_info_plain": pc.channels_info.make_request(),
            "channel_info": pc.channel_info.make_request("presence-c", ["user_count", "subscription_count"]),
            "users_info": pc.users_info.make_request("presence-c"),
            "terminate_user_connections": pc.terminate_user_connections.make_request("user-42"),
        }
    channel_auth = []
    for socket_id, channel, data in [
        ("1234.1234", "private-foobar", None),
        ("1234.1234", "presence-foobar", {"user_id": 10, "user_info": {"name": "Mr. Channels"}}),
        ("99.1", "presence-room", {"user_id": "zo\u00eb", "user_info": {"emoji": "\u2713"}}),
        ("7.7", "private-encrypted-secrets", None),
        ("18446744073709551615.1", "private-a=b@c,d.e;f_g", None),
    ]:
        res = p.authenticate(channel=channel, socket_id=socket_id, custom_data=data)
        channel_auth.append({
            "socket_id": socket_id,
            "channel": channel,
            "channel_data": res.get("channel_data"),
            "auth": res["auth"],
        })
    user_auth = []
    for socket_id, user in [
        ("1234.1234", {"id": "12345"}),
        ("5.6", {"id": "user-42", "user_info": {"name": "Ann"}, "watchlist": ["u1", "u2"]}),
    ]:
        res = p.authenticate_user(socket_id, user)
        user_auth.append({"socket_id": socket_id, "user_data": res["user_data"], "auth": res["auth"]})
    webhook_body = ('{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"},'
                    '{"name":"member_added","channel":"presence-a","user_id":"u1"}]}')
    return {
        "sdk": "pusher " + pusher.version.VERSION,
        "app": {"id": APP_ID, "key": KEY, "secret": SECRET, "timestamp": TIMESTAMP},
        "http": {name: wire(req) for name, req in http.items()},
        "channel_auth": channel_auth,
        "user_auth": user_auth,
        "webhook": {"body": webhook_body, "signature": sign(SECRET, webhook_body)},
    }


def validate_webhook():
    given = json.load(sys.stdin)
    verdict = client().validate_webhook(key=given["key"], signature=given["signature"], body=given["body"])
    if verdict is None:
        print("REFUSED")
        sys.exit(1)
    print("OK " + json.dumps(verdict, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1:] == ["validate-webhook"]:
        validate_webhook()
    elif not sys.argv[1:]:
        print(json.dumps(generate(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        sys.exit(__doc__)
