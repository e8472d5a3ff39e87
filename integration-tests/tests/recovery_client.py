"""Drives clients/python/gatewayrs_recovery.py against a gateway for tests/recovery.rs.

Line protocol on stdin/stdout with the Rust test: prints ``ID <client id>``; waits for
``READ <n>`` (reads n messages, prints ``GOT ...``), ``DROP`` (drops abruptly, prints
``DROPPED``), ``RESUME [url]`` (reconnects, to another gateway's URL if given, prints
``RESUMED <client id> <replayed>`` or ``NOT_RECOVERED <reason>``), ``SEND <text>...`` (sends
each, prints ``SENT``), ``RESENT`` (prints ``RESENT <n> LOST <n>`` of the last resume), ``QUIT``.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))

from gatewayrs_recovery import RecoveringClient  # noqa: E402


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    client = RecoveringClient(sys.argv[1], ack_every=7)
    client.connect()
    say("ID " + client.client_id)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "READ":
            got = [client.recv() for _ in range(int(cmd[1]))]
            say("GOT " + " ".join(got))
        elif cmd[0] == "DROP":
            client.drop()
            say("DROPPED")
        elif cmd[0] == "RESUME":
            client.reconnect(cmd[1] if len(cmd) > 1 else None)
            if client.resumed:
                say("RESUMED %s %d" % (client.client_id, client.replayed))
            else:
                say("NOT_RECOVERED " + client.reason)
        elif cmd[0] == "SEND":
            for text in cmd[1:]:
                client.send(text)
            say("SENT")
        elif cmd[0] == "RESENT":
            say("RESENT %d LOST %d" % (client.resent, client.unsent_lost))
        elif cmd[0] == "QUIT":
            client.close()
            return


if __name__ == "__main__":
    main()
