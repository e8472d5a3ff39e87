#!/usr/bin/env python3
"""The checks of scripts/compose-test.sh, with real WebSocket clients against the published ports
of a running compose project. Run by that script (it starts the cluster and tears it down); reads
GW_COMPOSE (the compose command line as a JSON list, with -p and -f) and GW_PROJECT.

The clients speak the chat demo's protocol (chat-demo/src/app.rs): `welcome` with the
client id on connect, `login {name, room}`, `say {to, content}`; `say` to "all" is sent to the
whole room, the sender included, which is how a sender sees its message answered.

Prints one line per check: PASS/FAIL, number, title, duration, details. Exits 1 if any failed.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import websockets

from cluster_clients import MessageLog, Traffic as _Traffic, ash, close_all, decode, run_checks, wait_until

COMPOSE = json.loads(os.environ["GW_COMPOSE"])
PROJECT = os.environ["GW_PROJECT"]
CONFIGS = {"register": "register.toml", "gateway": "gateway.toml", "business-worker": "business-worker.toml"}
VERBOSE = os.environ.get("COMPOSE_TEST_VERBOSE") == "1"


# ---- docker and compose ----------------------------------------------------------------------------


async def compose(*args, check=True, timeout=120):
    return await ash(*COMPOSE, *args, check=check, timeout=timeout)


async def containers(service):
    """Running containers of a service (by the labels both compose versions set; faster than
    `compose ps`)."""
    out = await ash(
        "docker", "ps", "-q", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={PROJECT}",
        "--filter", f"label=com.docker.compose.service={service}",
    )
    return sorted(line.strip() for line in out.splitlines() if line.strip())


async def container(service):
    ids = await containers(service)
    if len(ids) != 1:
        raise RuntimeError(f"expected one container of {service}, found {len(ids)}")
    return ids[0]


async def published(service, port):
    """host:port where Docker published a service's container port (an ephemeral port)."""
    out = (await ash("docker", "port", await container(service), f"{port}/tcp")).strip().splitlines()
    if not out or out[0].endswith(":0"):
        raise RuntimeError(f"{service} publishes no port {port}")
    host, _, p = out[0].strip().rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{p}"


async def status(cid, binary):
    """`<binary> status` inside the container: (exit code, output)."""
    r = await asyncio.to_thread(
        subprocess.run,
        ["docker", "exec", cid, f"/usr/local/bin/{binary}", "--config", f"/etc/gatewayrs/{CONFIGS[binary]}", "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.returncode, r.stdout + r.stderr


async def gateway_workers(cid):
    """Business workers a gateway routes to now (its `status` says "running, N worker(s)")."""
    code, out = await status(cid, "gateway")
    m = re.search(r"running, (\d+) worker", out)
    return int(m.group(1)) if code == 0 and m else -1


async def worker_rows(cid):
    """The rows of `business-worker status`: {name: (pid, msg_in, state)}."""
    code, out = await status(cid, "business-worker")
    rows = {}
    if code != 0:
        return rows
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 10 and f[0].isdigit() and f[5].isdigit():
            rows[f[3]] = (int(f[0]), int(f[5]), " ".join(f[9:]))
    return rows


async def wait_workers(gateway_services, n, timeout=45):
    """Waits until every listed gateway routes to n workers."""
    cids = {s: await container(s) for s in gateway_services}

    seen = {}

    async def probe():
        counts = {s: await gateway_workers(c) for s, c in cids.items()}
        seen.update(counts)
        return counts if all(v == n for v in counts.values()) else None

    try:
        return await wait_until(f"{n} workers on {', '.join(gateway_services)}", probe, timeout)
    except AssertionError as e:
        # The worker count each gateway last reported (-1: its `status` failed).
        raise AssertionError(f"{e}; last worker counts {seen}") from None


def http(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def ahttp(method, url, body=None):
    return await asyncio.to_thread(http, method, url, body)


# ---- WebSocket clients -----------------------------------------------------------------------------


class Closed(Exception):
    pass


class Client(MessageLog):
    """A chat client on one gateway; records every message (pings aside) with its arrival time."""

    def __init__(self, label, gateway, addr):
        super().__init__(label, gateway)
        self.gateway, self.url = gateway, f"ws://{addr}/"
        self.closed = False
        self.close_code = None
        self.id = None
        self.ws = None
        self.task = None

    async def connect(self, timeout=30):
        self.ws = await websockets.connect(self.url, open_timeout=10, ping_interval=None, close_timeout=5, max_size=None)
        self.task = asyncio.create_task(self._read())
        welcome = await self.wait(lambda m: m.get("type") == "welcome", timeout)
        self.id = welcome["client_id"]
        return self

    async def _read(self):
        try:
            async for raw in self.ws:
                await self.record(decode(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            async with self.cond:
                self.closed = True
                self.cond.notify_all()

    def closed_error(self):
        if self.closed:
            return Closed(f"{self.label} ({self.gateway}) closed with code {self.close_code}")
        return None

    def timeout_error(self, what, timeout):
        last = [{k: v for k, v in m.items() if k != "_t"} for m in self.msgs[-3:]]
        return AssertionError(f"{self.label} ({self.gateway}): no {what} within {timeout}s; last: {last}")

    async def wait_closed(self, timeout):
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.label} ({self.gateway}) still open after {timeout}s")

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def login(self, name, room):
        await self.send({"type": "login", "name": name, "room": room})
        await self.wait(lambda m: m.get("type") == "login" and m.get("client_id") == self.id, 20)

    async def say(self, content, to="all"):
        await self.send({"type": "say", "to": to, "content": content})

    def says(self, tag):
        """(sender id, number) of every `say` with content "<tag>:<n>", in arrival order."""
        out = []
        for m in self.msgs:
            c = m.get("content", "")
            if m.get("type") == "say" and c.startswith(tag + ":"):
                out.append((m.get("from_id"), int(c.rsplit(":", 1)[1])))
        return out

    async def close(self):
        if self.ws is not None and not self.closed:
            try:
                await self.ws.close()
            except Exception:
                pass
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except Exception:
                pass


async def clients_on(spec, room):
    """spec: [(label, gateway service, address)]; connects and logs every client into room."""
    cs = [Client(label, gw, addr) for label, gw, addr in spec]
    await asyncio.gather(*(c.connect() for c in cs))
    for c in cs:
        await c.login(c.label, room)
    return cs


class Traffic(_Traffic):
    """Every client sends "<tag>:<n>" to its room every `interval` until stopped (a closed socket
    stops it and is an error)."""

    async def settle(self, timeout=30):
        """Waits until every client has seen every message of every sender (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.missing():
                return
            await asyncio.sleep(0.2)

    def missing(self):
        """{(receiver label, sender label): count of numbers never received}."""
        out = {}
        for r in self.clients:
            got = {}
            for sender, n in r.says(self.tag):
                got.setdefault(sender, set()).add(n)
            for s in self.clients:
                lost = set(self.sent[s.id]) - got.get(s.id, set())
                if lost:
                    out[(r.label, s.label)] = len(lost)
        return out

    def report(self):
        """(lost, duplicated, out of order) counts over every (receiver, sender) pair, and the
        same for each sender's own echo."""
        lost = dup = disorder = own_lost = own_dup = own_disorder = 0
        for r in self.clients:
            per = {}
            for sender, n in r.says(self.tag):
                per.setdefault(sender, []).append(n)
            for s in self.clients:
                got = per.get(s.id, [])
                sent = self.sent[s.id]
                lo = len(set(sent) - set(got))
                du = len(got) - len(set(got))
                firsts = list(dict.fromkeys(got))
                di = sum(1 for a, b in zip(firsts, firsts[1:]) if b < a)
                lost, dup, disorder = lost + lo, dup + du, disorder + di
                if r is s:
                    own_lost, own_dup, own_disorder = own_lost + lo, own_dup + du, own_disorder + di
        return dict(lost=lost, dup=dup, disorder=disorder, own_lost=own_lost, own_dup=own_dup, own_disorder=own_disorder)

    def max_gap(self, c):
        """Longest wait, in seconds, between a client's sends and the answer to each."""
        arrivals = {}
        for m in c.msgs:
            cont = m.get("content", "")
            if m.get("type") == "say" and m.get("from_id") == c.id and cont.startswith(self.tag + ":"):
                arrivals.setdefault(int(cont.rsplit(":", 1)[1]), m["_t"])
        worst = 0.0
        for n, t in zip(self.sent[c.id], self.sent_at[c.id]):
            if n in arrivals:
                worst = max(worst, arrivals[n] - t)
        return worst


def closed_clients(cs):
    return [f"{c.label}@{c.gateway} ({c.close_code})" for c in cs if c.closed]


# ---- the checks ------------------------------------------------------------------------------------

ADDR = {}


async def check_cross_gateway():
    g1, g2, web = ADDR["gateway-1"], ADDR["gateway-2"], ADDR["web"]
    ann, bob = await clients_on([("Ann", "gateway-1", g1), ("Bob", "gateway-2", g2)], "c1")
    try:
        # Bob's login reached Ann on the other gateway (a group send).
        await ann.wait(lambda m: m.get("type") == "login" and m.get("client_id") == bob.id)
        await ann.say("c1:1")
        await bob.wait(lambda m: m.get("type") == "say" and m.get("from_id") == ann.id and m.get("content") == "c1:1")
        await ann.wait(lambda m: m.get("type") == "say" and m.get("from_id") == ann.id and m.get("content") == "c1:1")
        # A private message from gateway-2 to a client on gateway-1.
        await bob.say("psst", to=ann.id)
        await ann.wait(lambda m: m.get("type") == "say" and m.get("from_id") == bob.id and m.get("to_id") == ann.id)
        # The web backend (its own container) binds uids and pushes to one uid, then to the room.
        for c in (ann, bob):
            code, body = await ahttp("POST", f"http://{web}/api/bind", {"client_id": c.id, "name": c.label, "room": "c1"})
            assert code == 200 and json.loads(body).get("uid") == f"user:{c.label}", f"/api/bind: {code} {body}"
        code, body = await ahttp("POST", f"http://{web}/api/announce", {"uid": "user:Bob", "content": "for bob"})
        assert code == 200, f"/api/announce uid: {code} {body}"
        await bob.wait(lambda m: m.get("type") == "announce" and m.get("content") == "for bob")
        code, body = await ahttp("POST", f"http://{web}/api/announce", {"uid": "user:Ann", "content": "for ann"})
        assert code == 200, f"/api/announce uid: {code} {body}"
        await ann.wait(lambda m: m.get("type") == "announce" and m.get("content") == "for ann")
        code, body = await ahttp("POST", f"http://{web}/api/announce", {"room": "c1", "content": "for the room"})
        assert code == 200, f"/api/announce room: {code} {body}"
        for c in (ann, bob):
            await c.wait(lambda m: m.get("type") == "announce" and m.get("content") == "for the room")
        assert not any(m.get("content") == "for bob" for m in ann.msgs), "Ann got Bob's uid message"
        assert not any(m.get("content") == "for ann" for m in bob.msgs), "Bob got Ann's uid message"
        code, body = await ahttp("GET", f"http://{web}/api/online")
        online = json.loads(body)
        assert code == 200 and online.get("complete") and online.get("clients", 0) >= 2, f"/api/online: {code} {body}"
        code, page = await ahttp("GET", f"http://{web}/")
        assert code == 200 and "<html" in page.lower(), f"chat page: {code}"
        return (
            f"group, private and uid sends between gateway-1 and gateway-2; web backend: bind, announce, "
            f"online={online['clients']} (complete), page served"
        )
    finally:
        await close_all([ann, bob])


async def check_kill_worker():
    g1, g2 = ADDR["gateway-1"], ADDR["gateway-2"]
    workers = await containers("worker")
    assert len(workers) == 2, f"expected 2 worker containers, found {len(workers)}"
    victim, survivor = workers
    spec = [(f"k{i}", *[("gateway-1", g1), ("gateway-2", g2)][i % 2]) for i in range(6)]
    cs = await clients_on(spec, "k2")
    try:
        events = lambda rows: sum(v[1] for v in rows.values())  # noqa: E731
        before = events(await worker_rows(survivor))
        victim_before = events(await worker_rows(victim))
        traffic = Traffic(cs, "k2", 0.1)
        traffic.start()
        await asyncio.sleep(1.5)
        victim_served = events(await worker_rows(victim)) - victim_before
        await ash("docker", "kill", victim)
        sent_before_kill = traffic.total()
        await asyncio.sleep(8)
        await traffic.stop()
        await traffic.settle(30)
        rep = traffic.report()
        after = sum(v[1] for v in (await worker_rows(survivor)).values())
        running = (await ash("docker", "inspect", "-f", "{{.State.Running}}", victim)).strip()
        assert running == "false", f"the killed worker container is still running ({running})"
        closed = closed_clients(cs)
        assert not closed, f"client sockets closed: {closed}"
        assert not traffic.errors, "; ".join(traffic.errors)
        assert rep["lost"] == 0, f"{rep['lost']} messages never answered: {traffic.missing()}"
        stalled = sorted((round(traffic.max_gap(c), 1), c.label) for c in cs)
        after_kill = traffic.total() - sent_before_kill
        assert victim_served > 0, "the killed worker served no traffic before the kill; nothing was proven"
        assert after - before >= after_kill, (
            f"the surviving worker handled {after - before} events, fewer than the {after_kill} sent after the kill"
        )
        detail = (
            f"{traffic.total()} msgs from 6 clients, victim handled {victim_served} before the kill, "
            f"{after_kill} sent after it; 0 lost, 0 sockets closed, "
            f"{rep['own_dup']} redelivered duplicates; survivor handled {after - before} events; "
            f"slowest answer per client (s): {', '.join(f'{l}={g}' for g, l in stalled)}"
        )
    finally:
        await close_all(cs)
    # Bring the killed worker back for the next checks.
    await ash("docker", "start", victim)
    await wait_workers(["gateway-1", "gateway-2"], 2)
    return detail + "; the killed container was started again and relinked"


async def check_new_gateway():
    t = time.monotonic()
    await compose("up", "-d", "--no-build", "gateway-3")
    ADDR["gateway-3"] = await published("gateway-3", 7272)
    await wait_workers(["gateway-3"], 2)
    discovered = time.monotonic() - t
    g1, g3 = ADDR["gateway-1"], ADDR["gateway-3"]
    cs = await clients_on([("Dee", "gateway-1", g1), ("Cid", "gateway-3", g3)], "c3")
    try:
        dee, cid = cs
        await dee.wait(lambda m: m.get("type") == "login" and m.get("client_id") == cid.id)
        await cid.say("c3:1")
        await dee.wait(lambda m: m.get("type") == "say" and m.get("from_id") == cid.id and m.get("content") == "c3:1")
        await dee.say("c3:2")
        await cid.wait(lambda m: m.get("type") == "say" and m.get("from_id") == dee.id and m.get("content") == "c3:2")
        return f"gateway-3 linked to both workers {discovered:.1f}s after `up`; its client chats with gateway-1"
    finally:
        await close_all(cs)


async def check_register_restart():
    g1, g2, g3 = ADDR["gateway-1"], ADDR["gateway-2"], ADDR["gateway-3"]
    spec = [(f"r{i}", gw, addr) for i, (gw, addr) in enumerate([("gateway-1", g1), ("gateway-2", g2), ("gateway-3", g3)] * 2)]
    cs = await clients_on(spec, "r4")
    late = None
    try:
        traffic = Traffic(cs, "r4", 0.1)
        traffic.start()
        await asyncio.sleep(1)
        t = time.monotonic()
        await compose("restart", "register")
        restart_took = time.monotonic() - t
        await asyncio.sleep(2)
        # A gateway started after the restart: announced to the new register, found by the workers.
        t = time.monotonic()
        await compose("up", "-d", "--no-build", "gateway-4")
        ADDR["gateway-4"] = await published("gateway-4", 7272)
        await wait_workers(["gateway-4"], 2)
        discovered = time.monotonic() - t
        late = await Client("Lee", "gateway-4", ADDR["gateway-4"]).connect()
        await late.login("Lee", "r4")
        await late.say("r4-late:1")
        await cs[0].wait(lambda m: m.get("type") == "say" and m.get("from_id") == late.id)
        await late.wait(lambda m: m.get("type") == "say" and m.get("content", "").startswith("r4:"), 10, since=0)
        await traffic.stop()
        await traffic.settle(30)
        rep = traffic.report()
        closed = closed_clients(cs + [late])
        assert not closed, f"client sockets closed: {closed}"
        assert not traffic.errors, "; ".join(traffic.errors)
        assert rep["lost"] == 0, f"{rep['lost']} messages lost: {traffic.missing()}"
        assert rep["own_disorder"] == 0, f"{rep['own_disorder']} answers out of order"
        return (
            f"register restarted in {restart_took:.1f}s under traffic: {traffic.total()} msgs, 0 lost, 0 closed; "
            f"gateway-4 started afterwards linked to both workers in {discovered:.1f}s and serves clients"
        )
    finally:
        await close_all(cs + ([late] if late else []))


async def check_stop_gateway():
    g1, g2 = ADDR["gateway-1"], ADDR["gateway-2"]
    cs = await clients_on([("Xan", "gateway-1", g1), ("Yan", "gateway-2", g2), ("Yul", "gateway-2", g2)], "r5")
    xan, yan, yul = cs
    try:
        for y in (yan, yul):
            await xan.wait(lambda m, y=y: m.get("type") == "login" and m.get("client_id") == y.id)
        t = time.monotonic()
        await compose("stop", "-t", "20", "gateway-2")
        took = time.monotonic() - t
        for y in (yan, yul):
            await y.wait_closed(10)
        codes = {y.label: y.close_code for y in (yan, yul)}
        assert all(c == 1001 for c in codes.values()), f"close codes of gateway-2's clients: {codes} (want 1001)"
        for y in (yan, yul):
            await xan.wait(lambda m, y=y: m.get("type") == "logout" and m.get("client_id") == y.id, 15)
        assert not xan.closed, "a client of gateway-1 was closed"
        await xan.say("r5:1")
        await xan.wait(lambda m: m.get("type") == "say" and m.get("from_id") == xan.id and m.get("content") == "r5:1")
        return (
            f"`stop gateway-2` took {took:.1f}s; its 2 clients got close frames with 1001; the gateway-1 client "
            f"got a logout for each (on_close ran) and still chats"
        )
    except Closed as e:
        raise AssertionError(str(e))
    finally:
        await close_all(cs)


async def check_rolling_reload():
    g1, g3, g4 = ADDR["gateway-1"], ADDR["gateway-3"], ADDR["gateway-4"]
    live = ["gateway-1", "gateway-3", "gateway-4"]
    spec = [(f"n{i}", gw, addr) for i, (gw, addr) in enumerate([("gateway-1", g1), ("gateway-3", g3), ("gateway-4", g4)] * 2)]
    cs = await clients_on(spec, "r6")
    steps = []
    try:
        workers = await containers("worker")
        traffic = Traffic(cs, "r6", 0.05)
        traffic.start()
        await asyncio.sleep(1)
        # One container at a time, as an orchestrator's rolling update does.
        for w in workers:
            t = time.monotonic()
            await ash("docker", "restart", "-t", "20", w)
            await wait_workers(live, 2)
            steps.append(f"restart {w[:6]} {time.monotonic() - t:.1f}s")
        # In-container reload of every replica at once (SIGUSR1): each master starts a new process,
        # waits until it is linked to every gateway, then retires the old one.
        old = {w: {k: v[0] for k, v in (await worker_rows(w)).items()} for w in workers}
        t = time.monotonic()
        await compose("kill", "-s", "USR1", "worker")

        async def reloaded():
            for w in workers:
                rows = await worker_rows(w)
                children = {k: v for k, v in rows.items() if k != "worker"}
                master = rows.get("worker")
                # The master's state is "running…" again (not "reloading i/n", no "failed").
                done = (
                    master
                    and master[2].startswith("running")
                    and "failed" not in master[2]
                    and children
                    and all(old[w].get(k) != v[0] and v[2].startswith("running") for k, v in children.items())
                )
                if not done:
                    return None
            return True

        await wait_until("the in-container reloads", reloaded, 45)
        await wait_workers(live, 2)
        steps.append(f"compose kill -s USR1 worker {time.monotonic() - t:.1f}s")
        await asyncio.sleep(1)
        return await exactly_once(traffic, cs, steps)
    finally:
        await close_all(cs)


async def exactly_once(traffic, cs, steps):
    """Stops the traffic and asserts that every client saw every numbered message of every sender
    exactly once and in order, and that no socket closed."""
    await traffic.stop()
    await traffic.settle(30)
    rep = traffic.report()
    closed = closed_clients(cs)
    assert not closed, f"client sockets closed: {closed}"
    assert not traffic.errors, "; ".join(traffic.errors)
    problems = []
    if rep["lost"]:
        problems.append(f"{rep['lost']} lost ({traffic.missing()})")
    if rep["own_dup"] or rep["own_disorder"]:
        problems.append(f"senders' own answers: {rep['own_dup']} duplicated, {rep['own_disorder']} out of order")
    if rep["dup"] or rep["disorder"]:
        problems.append(f"across the room: {rep['dup']} duplicated, {rep['disorder']} out of order")
    assert not problems, "; ".join(problems) + f" [{', '.join(steps)}]"
    return (
        f"{traffic.total()} numbered msgs from {len(cs)} clients on 3 gateways, each seen by all {len(cs)}: "
        f"every one answered exactly once, in order; {', '.join(steps)}"
    )


async def check_restart_all_workers():
    """Every worker container restarted at once under traffic (COMPOSE_TEST_STRICT=0 skips it)."""
    live = ["gateway-1", "gateway-3", "gateway-4"]
    spec = [(f"a{i}", gw, ADDR[gw]) for i, gw in enumerate(live * 2)]
    cs = await clients_on(spec, "r8")
    try:
        traffic = Traffic(cs, "r8", 0.05)
        traffic.start()
        await asyncio.sleep(1)
        t = time.monotonic()
        await compose("restart", "-t", "20", "worker")
        await wait_workers(live, 2)
        steps = [f"compose restart worker {time.monotonic() - t:.1f}s"]
        await asyncio.sleep(1)
        return await exactly_once(traffic, cs, steps)
    finally:
        await close_all(cs)


async def check_down():
    t = time.monotonic()
    await compose("down", "-v", "--timeout", "20", timeout=180)
    took = time.monotonic() - t
    left = (await ash("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}")).split()
    nets = (await ash("docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}")).split()
    assert not left, f"containers left: {left}"
    assert not nets, f"networks left: {nets}"
    return f"down in {took:.1f}s; no container or network of the project left"


CHECKS = [
    (1, "clients on two gateways chat across containers", check_cross_gateway, 60),
    (2, "docker kill of a business-worker container under traffic", check_kill_worker, 90),
    (3, "a gateway started later is discovered and serves clients", check_new_gateway, 60),
    (4, "register restarted under traffic; a later gateway is discovered", check_register_restart, 90),
    (5, "a gateway stopped: 1001 close frames, on_close delivered, others unaffected", check_stop_gateway, 60),
    (6, "rolling restart and reload of the workers under numbered traffic", check_rolling_reload, 150),
    (7, "docker compose down leaves nothing running", check_down, 120),
]
if os.environ.get("COMPOSE_TEST_STRICT", "1") != "0":
    CHECKS.insert(6, (8, "all worker containers restarted at once under numbered traffic", check_restart_all_workers, 90))


async def ready():
    """The cluster is up: both gateways route to both workers and the web backend answers."""
    t = time.monotonic()
    for s in ("gateway-1", "gateway-2"):
        ADDR[s] = await published(s, 7272)
    ADDR["web"] = await published("chat-web", 8080)
    await wait_workers(["gateway-1", "gateway-2"], 2, timeout=60)

    async def web_up():
        try:
            code, _ = await ahttp("GET", f"http://{ADDR['web']}/api/config")
            return code == 200
        except OSError:
            return False

    await wait_until("the chat page", web_up, 30)
    return time.monotonic() - t


async def dump_logs():
    """The last log lines of every container, after a failed check."""
    out = await compose("logs", "--no-color", "--tail=25", check=False, timeout=60)
    for line in out.splitlines():
        print(f"      | {line}", flush=True)


async def main():
    try:
        took = await ready()
    except Exception as e:
        print(f"FAIL  0  cluster up and linked  ({e})", flush=True)
        return 1
    print(
        f"ok    0  cluster up: both gateways linked to both workers, chat page answering  ({took:.1f}s)  "
        f"ws://{ADDR['gateway-1']}/ ws://{ADDR['gateway-2']}/ http://{ADDR['web']}/",
        flush=True,
    )

    async def save_logs():
        if os.environ.get("COMPOSE_TEST_LOGS"):
            # Every container's full log, before `down` removes them.
            path = os.path.join(os.environ["COMPOSE_TEST_LOGS"], f"{PROJECT}.log")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(await compose("logs", "--no-color", "--timestamps", check=False, timeout=60))
            print(f"      logs of every container: {path}", flush=True)

    return await run_checks(CHECKS, 7, "COMPOSE_TEST_KEEP", dump_logs, before_teardown=save_logs)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
