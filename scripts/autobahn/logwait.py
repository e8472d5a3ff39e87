#!/usr/bin/env python3
"""Waits for a JSON log line of a gw daemon and prints one of its fields.

    logwait.py LOGFILE PID MESSAGE [FIELD] [--timeout SECS]

Reads LOGFILE (lines written by `[log] format = "json"`, other lines ignored) until a line whose
`fields.message` equals MESSAGE appears, then prints `fields.FIELD` (or nothing without FIELD) and
exits 0. Exits 1 when process PID exits first or the timeout passes, with the log's tail on stderr.
"""

import argparse
import json
import os
import sys
import time


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) counts as dead.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def scan(path, message, field):
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    fields = json.loads(line).get("fields", {})
                except ValueError:
                    continue
                if fields.get("message") == message:
                    return True, fields.get(field, "") if field else ""
    except FileNotFoundError:
        pass
    return False, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logfile")
    ap.add_argument("pid", type=int)
    ap.add_argument("message")
    ap.add_argument("field", nargs="?")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    while True:
        found, value = scan(a.logfile, a.message, a.field)
        if found:
            print(value)
            return 0
        why = None
        if not alive(a.pid):
            why = "process %d exited" % a.pid
        elif time.monotonic() > deadline:
            why = "timed out after %gs" % a.timeout
        if why:
            sys.stderr.write("no log line %r in %s: %s\n" % (a.message, a.logfile, why))
            try:
                with open(a.logfile, errors="replace") as f:
                    sys.stderr.write("".join(f.readlines()[-20:]))
            except OSError:
                pass
            return 1
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
