#!/usr/bin/env python3
"""Software nobody here wrote checks our webhooks: the official Pusher server SDK (PyPI
`pusher`) validates each webhook request a gateway made, as a Laravel or Django backend would.

Reads a JSON array of {"key", "signature", "body"} (the X-Pusher-Key and X-Pusher-Signature
headers and the raw body of each request) on stdin; `pusher.Pusher(...).validate_webhook` must
accept every one, and refuse the same bodies tampered with or signed with another secret.
Prints "OK: <n> webhooks, events: <names>" and exits 0, or says what failed and exits 1.
"""

import argparse
import json
import sys

import pusher


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--app-id", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True)
    args = p.parse_args()
    requests = json.load(sys.stdin)
    if not requests:
        print("FAIL: no webhook requests given")
        return 1
    client = pusher.Pusher(app_id=args.app_id, key=args.key, secret=args.secret)
    wrong = pusher.Pusher(app_id=args.app_id, key=args.key, secret=args.secret + "-not")
    names = []
    for r in requests:
        data = client.validate_webhook(r["key"], r["signature"], r["body"])
        if data is None:
            print("FAIL: validate_webhook refused %r" % r)
            return 1
        if not isinstance(data.get("events"), list) or not data["events"]:
            print("FAIL: no events in %r" % data)
            return 1
        names.extend(e["name"] for e in data["events"])
        if wrong.validate_webhook(r["key"], r["signature"], r["body"]) is not None:
            print("FAIL: another secret's client accepted %r" % r)
            return 1
        tampered = r["body"].replace('"events"', '"events" ', 1)
        if client.validate_webhook(r["key"], r["signature"], tampered) is not None:
            print("FAIL: a tampered body was accepted")
            return 1
    print("OK: %d webhooks, events: %s" % (len(requests), ",".join(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
