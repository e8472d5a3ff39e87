#!/usr/bin/env python3
"""The checks of scripts/swarm-test.sh, with real WebSocket clients against the published ports
of a running swarm stack (docker-compose.yml + docker/stack.yml + docker/stack.test.yml). Run by
that script (it deploys the stack and removes it); reads GW_STACK (the stack name) and GW_PORTS
(JSON: service -> published port on this node).

The clients speak the chat demo's protocol (chat-demo/src/app.rs) and ask for connection state
recovery (`?gw_recover=1`, docs/recovery.md): after their gateway task is replaced they reconnect
to the same published port with `gw_resume` + `gw_received`, and are resumed (same client id,
missed messages replayed, their own unread sends sent again from the gateway's `accepted`); a
`not_recovered` (a new client id: they log in again) fails the rolling-update check.

Prints one line per check: PASS/FAIL, number, title, duration, details. Exits 1 if any failed.
"""

import asyncio
import base64
import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import websockets

from cluster_clients import MessageLog, Traffic as _Traffic, ash, close_all, decode, run_checks
from cluster_clients import wait_until as _wait_until

STACK = os.environ["GW_STACK"]
PORTS = json.loads(os.environ["GW_PORTS"])
HOST = os.environ.get("GW_HOST", "127.0.0.1")
GATEWAYS = ["gateway-1", "gateway-2"]
# Where a client of a replaced task reconnects: "same" (its gateway's published port, served by
# the new task once it is up) or "other" (the other gateway's port, as a balancer in front of
# both would send it; the old task may then hand the client over, once gateways can).
RECONNECT = os.environ.get("SWARM_TEST_RECONNECT", "same")
NUL = "\0"


# ---- docker ----------------------------------------------------------------------------------------


async def running_task(service):
    """(task id, task name, container id) of the service's one task that should be running and
    is, or None (during an update there may be two running containers; this is the newest)."""
    out = await ash(
        "docker", "service", "ps", f"{STACK}_{service}", "--no-trunc",
        "--filter", "desired-state=running", "--format", "{{.ID}} {{.Name}} {{.CurrentState}}",
    )
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == "Running":
            cid = (await ash("docker", "inspect", "-f", "{{.Status.ContainerStatus.ContainerID}}", f[0])).strip()
            if cid:
                # The container's name is the task name the gateway advertises.
                name = (await ash("docker", "inspect", "-f", "{{.Name}}", cid)).strip().lstrip("/")
                return f[0], name, cid
    return None


async def gateway_workers(cid):
    """Business workers a gateway container routes to now (`gateway status`: "running, N worker(s)")."""
    r = await asyncio.to_thread(
        subprocess.run,
        ["docker", "exec", cid, "/usr/local/bin/gateway", "--config", "/etc/gatewayrs/gateway.toml", "status"],
        capture_output=True, text=True, timeout=30,
    )
    m = re.search(r"running, (\d+) worker", r.stdout + r.stderr)
    return int(m.group(1)) if r.returncode == 0 and m else -1


async def worker_links():
    """Gateway links of every worker process of the stack's worker containers: {container: [links]}
    (the `conns` column of `business-worker status` for the worker processes, not the master)."""
    out = await ash("docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_worker")
    links = {}
    for cid in out.split():
        r = await asyncio.to_thread(
            subprocess.run,
            ["docker", "exec", cid, "/usr/local/bin/business-worker", "--config",
             "/etc/gatewayrs/business-worker.toml", "status"],
            capture_output=True, text=True, timeout=30,
        )
        rows = [line.split() for line in r.stdout.splitlines()]
        links[cid[:12]] = [int(f[4]) for f in rows if len(f) >= 10 and f[0].isdigit() and f[3] != "worker"
                           and f[4].isdigit()]
    return links


async def wait_until(what, probe, timeout, interval=0.25):
    """cluster_clients.wait_until, a failed docker command counting as a false answer (a task may go
    away between two commands)."""
    return await _wait_until(what, probe, timeout, interval, retry_on=(RuntimeError, subprocess.TimeoutExpired))


async def linked_task(service, n=2, timeout=60):
    """Waits until the service's running task routes to n workers; returns (task id, name, cid)."""

    async def probe():
        t = await running_task(service)
        return t if t and await gateway_workers(t[2]) == n else None

    return await wait_until(f"{service}'s task linked to {n} workers", probe, timeout)


def gateway_of(client_id):
    """The advertised address inside a client id (base64url of it, then instance and number)."""
    part = client_id.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


# ---- WebSocket clients with recovery ----------------------------------------------------------------


class Client(MessageLog):
    """One logical chat client on one gateway service's published port, across reconnects. Records
    every data message (pings aside) with the connection it came on."""

    def __init__(self, label, service, room):
        super().__init__(label, service)
        self.service, self.room = service, room
        self.base = f"ws://{HOST}:{PORTS[service]}/"
        self.ws = None
        self.id = None
        self.token = None
        self.received = 0  # data messages, as the gateway counts them (for gw_received)
        self.acked = 0
        self.conn = 0  # connection number (0 = the first)
        self.open = False
        self.stopping = False
        self.close_codes = []
        self.outcomes = []  # per reconnect: "resumed" or the not_recovered reason
        self.replayed = 0
        self.reconnected_at = None
        self.dropped_at = None
        self.gaps = []  # seconds from each drop to the reconnect (logged in again when not resumed)
        self.gateways = []  # advertised address of each connection's gateway
        self.errors = []
        self.life = None
        self.reconnect_to = None  # another service's port for reconnects
        self._pending = {}
        self._recovery = None
        self.sent = 0  # data messages written, across connections (the gateway's `accepted` counts them)
        self.outbox = collections.deque(maxlen=1000)
        self.resent = 0

    def _url(self, params):
        return self.base + "?" + urllib.parse.urlencode(params)

    async def _open(self, params, timeout=10):
        self._pending = {}
        self._recovery = asyncio.get_running_loop().create_future()
        self.ws = await websockets.connect(
            self._url(params), open_timeout=timeout, ping_interval=None, close_timeout=5, max_size=None
        )
        reader = asyncio.create_task(self._read(self.ws))
        try:
            frame = await asyncio.wait_for(asyncio.shield(self._recovery), timeout)
            if frame.get("type") == "resumed" and "accepted" in frame:
                # What the gateway never read of what this client sent goes again, first.
                kept_from = self.sent - len(self.outbox)
                assert frame["accepted"] >= kept_from, f"{self.label}: accepted {frame['accepted']} < {kept_from}"
                for i, text in enumerate(list(self.outbox)):
                    if kept_from + i >= frame["accepted"]:
                        await self.ws.send(text)
                        self.resent += 1
        except BaseException:
            reader.cancel()
            await self.ws.close()
            raise
        self.open = True
        self.reader = reader
        return frame

    async def connect(self):
        """A fresh connection asking for recovery, logged into the room."""
        await self._open({"gw_recover": "1"})
        self.gateways.append(gateway_of(self.id))
        await self.login()
        self.life = asyncio.create_task(self._supervise())
        return self

    async def send(self, text):
        await self.ws.send(text)
        self.sent += 1
        self.outbox.append(text)

    async def login(self):
        since = len(self.msgs)
        await self.send(json.dumps({"type": "login", "name": self.label, "room": self.room}))
        await self.wait(lambda m: m.get("type") == "login" and m.get("client_id") == self.id, 20, since=since)

    async def _read(self, ws):
        try:
            async for raw in ws:
                if isinstance(raw, str) and raw.startswith(NUL) and not raw.startswith(NUL + NUL):
                    self._control(json.loads(raw[1:]))
                    continue
                self.received += 1
                if isinstance(raw, str) and raw.startswith(NUL + NUL):
                    raw = raw[1:]
                m = decode(raw)
                if self.received - self.acked >= 50:
                    self.acked = self.received
                    await ws.send(NUL + json.dumps({"type": "ack", "received": self.received}))
                await self.record(m, _conn=self.conn)
        except websockets.ConnectionClosed:
            pass
        finally:
            if ws is self.ws:
                self.open = False
                self.dropped_at = time.monotonic()
                self.close_codes.append(ws.close_code)
                if self._recovery and not self._recovery.done():
                    self._recovery.set_exception(ConnectionError(f"closed ({ws.close_code}) before the recovery frame"))
                async with self.cond:
                    self.cond.notify_all()

    def _control(self, frame):
        t = frame.get("type")
        if t in ("resumed", "not_recovered"):
            self._pending = frame
        elif t == "recovery":
            if self._pending.get("type") != "resumed":
                self.received = 0  # a new client: counting starts over
                self.sent = 0
                self.outbox.clear()
            self.acked = min(self.acked, self.received)
            self.id, self.token = frame["client_id"], frame["token"]
            if self._recovery and not self._recovery.done():
                self._recovery.set_result(dict(self._pending))

    async def _supervise(self):
        """Reconnects after every drop the client did not ask for: resume, else a new client."""
        while not self.stopping:
            async with self.cond:
                await self.cond.wait_for(lambda: not self.open or self.stopping)
            if self.stopping:
                return
            deadline = time.monotonic() + 45
            if self.reconnect_to:
                self.base = f"ws://{HOST}:{PORTS[self.reconnect_to]}/"
            while not self.stopping:
                try:
                    pending = await self._open(
                        {"gw_recover": "1", "gw_resume": self.token, "gw_received": str(self.received)}
                    )
                    break
                except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, ConnectionError,
                        asyncio.TimeoutError) as e:
                    if time.monotonic() > deadline:
                        self.errors.append(f"{self.label}: no reconnect within 45s ({e})")
                        return
                    await asyncio.sleep(0.2)
            self.conn += 1
            self.gateways.append(gateway_of(self.id))
            if pending.get("type") == "resumed":
                self.outcomes.append("resumed")
                self.replayed += pending.get("replayed", 0)
            else:
                self.outcomes.append(pending.get("reason", "no answer"))
                try:
                    await self.login()
                except Exception as e:  # noqa: BLE001 - reported as the check's failure
                    self.errors.append(f"{self.label}: login after reconnect failed: {e}")
            self.reconnected_at = time.monotonic()
            self.gaps.append(self.reconnected_at - self.dropped_at)

    async def say(self, content, to="all"):
        if not self.open:
            raise websockets.ConnectionClosed(None, None)
        await self.send(json.dumps({"type": "say", "to": to, "content": content}))

    def says(self, tag):
        """(sender label, number) of every `say` with content "<tag>:<label>:<n>", in arrival order."""
        out = []
        for m in self.msgs:
            c = m.get("content", "")
            if m.get("type") == "say" and c.startswith(tag + ":"):
                _, label, n = c.split(":")
                out.append((label, int(n), m["_t"]))
        return out

    async def close(self):
        self.stopping = True
        async with self.cond:
            self.cond.notify_all()
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001
                pass
        if self.life is not None:
            try:
                await asyncio.wait_for(self.life, 5)
            except Exception:  # noqa: BLE001
                pass


class Traffic(_Traffic):
    """Every client sends "<tag>:<label>:<n>" to its room every `interval` while connected; the
    numbers of the sends that were written to an open socket are kept (by label)."""

    def key(self, c):
        return c.label

    def content(self, c, n):
        return f"{self.tag}:{c.label}:{n}"

    def send_failed(self, c, e):
        return False  # a drop: the client reconnects, the traffic goes on


# ---- the checks ------------------------------------------------------------------------------------

STATE = {}


async def ready():
    t = time.monotonic()
    for s in GATEWAYS:
        STATE[s] = await linked_task(s, 2, timeout=90)

    async def web_up():
        import urllib.request

        def get():
            try:
                with urllib.request.urlopen(f"http://{HOST}:{PORTS['chat-web']}/api/config", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        return await asyncio.to_thread(get)

    await wait_until("the chat page", web_up, 30)
    return time.monotonic() - t


async def check_cross_gateway():
    ann = await Client("Ann", "gateway-1", "s1").connect()
    bob = await Client("Bob", "gateway-2", "s1").connect()
    try:
        await ann.wait(lambda m: m.get("type") == "login" and m.get("client_id") == bob.id)
        await ann.say("s1:Ann:1")
        await bob.wait(lambda m: m.get("content") == "s1:Ann:1" and m.get("from_id") == ann.id)
        await bob.say("psst", to=ann.id)
        await ann.wait(lambda m: m.get("type") == "say" and m.get("from_id") == bob.id and m.get("to_id") == ann.id)
        want = {ann.label: STATE["gateway-1"][1], bob.label: STATE["gateway-2"][1]}
        got = {c.label: c.gateways[0].rsplit(":", 1)[0] for c in (ann, bob)}
        assert got == want, f"client ids name {got}, the running tasks are {want}"
        return (
            f"group and private sends between the two gateway services through their published ports; client ids "
            f"name the tasks: {got['Ann']}:2900, {got['Bob']}:2900"
        )
    finally:
        await close_all([ann, bob])


async def check_rolling_update():
    n_per = int(os.environ.get("SWARM_TEST_CLIENTS", "4"))
    lines = []
    for victim in GATEWAYS:
        other = [g for g in GATEWAYS if g != victim][0]
        tag = f"u{victim[-1]}"
        cs = [Client(f"{tag}{g[-1]}x{i}", g, tag) for g in GATEWAYS for i in range(n_per)]
        for c in cs:
            await c.connect()
        hit = [c for c in cs if c.service == victim]
        spared = [c for c in cs if c.service == other]
        if RECONNECT == "other":
            for c in hit:
                c.reconnect_to = other
        try:
            old = await running_task(victim)
            traffic = Traffic(cs, tag, 0.1)
            traffic.start()
            await asyncio.sleep(1.5)
            t = time.monotonic()
            await ash("docker", "service", "update", "--force", "--detach=false", "--quiet",
                      f"{STACK}_{victim}", timeout=150)
            update_took = time.monotonic() - t
            new = await linked_task(victim, 2, timeout=30)
            relinked = time.monotonic() - t

            async def workers_relinked():
                links = await worker_links()
                ok = len(links) == 2 and all(v and all(n == 2 for n in v) for v in links.values())
                return links if ok else None

            # Each worker has dropped the old task and linked the new one: 2 gateway links each.
            links = await wait_until("every worker linked to the 2 current gateway tasks", workers_relinked, 30)
            assert new[0] != old[0] and new[2] != old[2], f"{victim}: the task was not replaced ({old} -> {new})"
            still = (await ash("docker", "ps", "-q", "--no-trunc", "--filter", f"id={old[2]}")).strip()
            assert not still, f"{victim}: the old task's container {old[2][:12]} still runs"
            # Every client of the replaced task reconnected and is answered again: a send after its
            # reconnect comes back, and a message from the other gateway reaches it.
            await wait_until(
                "the replaced task's clients to reconnect",
                lambda: asyncio.sleep(0, all(c.open and c.conn >= 1 and c.reconnected_at for c in hit)
                                      or any(c.errors for c in hit)),
                45,
            )
            errs = [e for c in cs for e in c.errors]
            assert not errs, "; ".join(errs)
            after = time.monotonic()
            await asyncio.sleep(2)
            await traffic.stop()
            spared_labels = {s.label for s in spared}
            for c in hit:
                last = traffic.sent[c.label][-1] if traffic.sent[c.label] else None
                assert last is not None and traffic.sent_at[c.label][-1] > c.reconnected_at, (
                    f"{c.label} sent nothing after its reconnect"
                )
                await c.wait(lambda m, c=c, last=last: m.get("content") == f"{tag}:{c.label}:{last}", 20,
                             what=f"answer to its send #{last} after the reconnect")
                await c.wait(lambda m: m.get("type") == "say" and m["_t"] > after
                             and m.get("content", "").split(":")[1:2] in [[x] for x in spared_labels], 20,
                             what="message from the other gateway after the reconnect")
            # Everything that reached the cluster: what the spared clients got. They must all have
            # got every message of every spared sender, exactly once and in order, and the
            # replaced senders' messages at most once and in order.
            for s in spared:
                await wait_until(
                    f"{s.label} to get every spared sender's messages",
                    lambda s=s: asyncio.sleep(0, all(
                        set(traffic.sent[o.label]) <= {n for l, n, _ in s.says(tag) if l == o.label} for o in spared
                    )),
                    20,
                )
            await asyncio.sleep(0.5)
            delivered = set()
            problems = []
            for s in spared:
                per = collections.defaultdict(list)
                for label, n, _ in s.says(tag):
                    per[label].append(n)
                    delivered.add((label, n))
                for label, got in per.items():
                    if len(got) != len(set(got)):
                        problems.append(f"{s.label} got {len(got) - len(set(got))} duplicates from {label}")
                    if any(b <= a for a, b in zip(got, got[1:])):
                        problems.append(f"{s.label} got {label}'s messages out of order")
                if s.close_codes:
                    problems.append(f"{s.label} on {other} was disconnected ({s.close_codes})")
            for s in spared:
                mine = {(l, n) for l, n, _ in s.says(tag)}
                if mine != delivered:
                    problems.append(f"{s.label} missed {len(delivered - mine)} of the delivered messages")
            assert not problems, "; ".join(problems)
            # The replaced task's clients: what they missed of what was delivered, duplicates, order.
            lost = dup = disorder = 0
            missed = []
            for c in hit:
                got = c.says(tag)
                lost += len(delivered - {(l, n) for l, n, _ in got})
                missed += [f"{c.label} missed {l}:{n}" for l, n in sorted(delivered - {(l, n) for l, n, _ in got})][:3]
                per = collections.defaultdict(list)
                for label, n, _ in got:
                    per[label].append(n)
                dup += sum(len(v) - len(set(v)) for v in per.values())
                disorder += sum(1 for v in per.values() for a, b in zip(v, v[1:]) if b <= a)
            never = sum(1 for c in hit for n in traffic.sent[c.label] if (c.label, n) not in delivered)
            outcomes = collections.Counter(o for c in hit for o in c.outcomes)
            recovered = outcomes.pop("resumed", 0)
            codes = collections.Counter(code for c in hit for code in c.close_codes)
            # A resumed client keeps its id (naming the replaced task); one served as a new client
            # gets an id of the task it reached.
            changed = [c for c in hit if len(set(c.gateways)) > 1]
            new_names = {c.gateways[-1].rsplit(":", 1)[0] for c in changed}
            want = new[1] if RECONNECT != "other" else (await running_task(other))[1]
            assert new_names <= {want}, f"reconnected clients are on {new_names}, expected {want} ({RECONNECT})"
            lines.append(
                f"{victim}: update {update_took:.1f}s (task {old[1].split('.')[-1][:6]} -> {new[1].split('.')[-1][:6]}, "
                f"linked to 2 workers {relinked:.1f}s after the start; gateway links per worker "
                f"{sorted(n for v in links.values() for n in v)}); {traffic.total()} msgs from {len(cs)} clients; "
                f"{other}'s {len(spared)} clients: all {len(delivered)} delivered msgs exactly once, in order, 0 disconnects; "
                f"{victim}'s {len(hit)} clients (close codes {dict(codes)}) all answered again "
                f"({'on ' + other if RECONNECT == 'other' else 'on the new task'}), "
                f"{max(g for c in hit for g in c.gaps):.2f}s at most after their drop: "
                f"recovered {recovered}, not recovered {sum(outcomes.values())} {dict(outcomes) or ''}, "
                f"replayed {sum(c.replayed for c in hit)}, lost {lost} of {len(delivered) * len(hit)} deliveries, "
                f"{dup} duplicated, {disorder} out of order; {never} of their sends never reached the cluster"
                f" ({sum(c.resent for c in hit)} sent again after their resume)"
            )
            # The replaced task handed its clients over (docs/recovery.md, "Gateway stop"): each
            # came back under its id with nothing lost, repeated or reordered, either way.
            assert not outcomes and recovered >= len(hit), lines[-1]
            assert not (lost or dup or disorder or never), lines[-1] + "; " + ", ".join(missed)
        finally:
            await close_all(cs)
    return " | ".join(lines)


async def check_stack_rm():
    t = time.monotonic()
    await ash("docker", "stack", "rm", STACK)

    async def gone():
        left = (await ash("docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}")).split()
        nets = (await ash("docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}")).split()
        svcs = (await ash("docker", "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}")).split()
        return (not left and not nets and not svcs) or None

    await wait_until("the stack's services, containers and networks to go", gone, 90, interval=0.5)
    return f"stack removed in {time.monotonic() - t:.1f}s; no service, container or network of it left"


CHECKS = [
    (1, "clients on both gateway services chat across tasks", check_cross_gateway, 60),
    (2, "rolling `docker service update --force` of each gateway under numbered traffic", check_rolling_update, 240),
    (3, "docker stack rm leaves nothing", check_stack_rm, 120),
]


async def dump_logs():
    for s in GATEWAYS + ["worker", "register"]:
        out = await ash("docker", "service", "logs", "--no-trunc", "--tail", "15", f"{STACK}_{s}", check=False, timeout=30)
        for line in out.splitlines()[-15:]:
            print(f"      | {line}", flush=True)


async def main():
    try:
        took = await ready()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL  0  stack up and linked  ({e})", flush=True)
        await dump_logs()
        return 1
    print(
        f"ok    0  stack up: both gateway tasks linked to both workers, chat page answering  ({took:.1f}s)  "
        f"ws://{HOST}:{PORTS['gateway-1']}/ ({STATE['gateway-1'][1]}) ws://{HOST}:{PORTS['gateway-2']}/ "
        f"({STATE['gateway-2'][1]})",
        flush=True,
    )
    return await run_checks(CHECKS, 3, "SWARM_TEST_KEEP", dump_logs)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
