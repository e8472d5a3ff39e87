"""What the Docker cluster checks share (scripts/compose_checks.py, scripts/swarm_checks.py): running
docker commands, waiting for a condition, the message log of a chat client, numbered traffic and the
loop that runs the checks and prints one PASS/FAIL line each.

The clients speak the chat demo's protocol (chat-demo/src/app.rs); each script has its own Client
(plain, or with connection state recovery) built on `MessageLog`, and its own checks of the traffic.
"""

import asyncio
import json
import os
import subprocess
import time

import websockets

# ---- docker ----------------------------------------------------------------------------------------


def sh(*args, check=True, timeout=120):
    """Runs a command; its stdout. Raises RuntimeError when it fails and `check` is set."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


async def ash(*args, check=True, timeout=120):
    """`sh` in a thread."""
    return await asyncio.to_thread(sh, *args, check=check, timeout=timeout)


async def wait_until(what, probe, timeout, interval=0.25, retry_on=()):
    """Polls `probe` until it returns something true, and returns that. An exception listed in
    `retry_on` counts as a false answer (its text is the last answer); after `timeout` seconds it
    raises AssertionError naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
        except retry_on as e:
            last = str(e)
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ---- WebSocket clients -----------------------------------------------------------------------------


def decode(raw):
    """A chat message from a text frame ({"type": "?", "raw": ...} when it is not JSON)."""
    try:
        return json.loads(raw)
    except ValueError:
        return {"type": "?", "raw": raw}


class MessageLog:
    """The messages a chat client got (pings aside), each with its arrival time in "_t", and a way
    to wait for one. `where` names the client's gateway in errors."""

    def __init__(self, label, where):
        self.label, self.where = label, where
        self.msgs = []
        self.cond = asyncio.Condition()

    async def record(self, m, **extra):
        """Adds a message (with `extra` keys) and wakes the waiters; drops pings."""
        if m.get("type") == "ping":
            return
        m["_t"] = time.monotonic()
        m.update(extra)
        async with self.cond:
            self.msgs.append(m)
            self.cond.notify_all()

    def closed_error(self):
        """What `wait` raises when no message can come any more, or None (still open)."""
        return None

    def timeout_error(self, what, timeout):
        """What `wait` raises when no matching message came in time."""
        return AssertionError(f"{self.label} ({self.where}): no {what} within {timeout}s")

    async def wait(self, pred, timeout=15, since=0, what="the expected message"):
        """The first message from index `since` on that `pred` accepts, waiting up to `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.cond:
            while True:
                for m in self.msgs[since:]:
                    if pred(m):
                        return m
                err = self.closed_error()
                if err is not None:
                    raise err
                left = deadline - loop.time()
                if left <= 0:
                    raise self.timeout_error(what, timeout)
                try:
                    await asyncio.wait_for(self.cond.wait(), left)
                except asyncio.TimeoutError:
                    pass


async def close_all(cs):
    """Closes every client at once."""
    await asyncio.gather(*(c.close() for c in cs))


class Traffic:
    """Every client sends a numbered `say` (`content`) to its room every `interval` until stopped;
    `sent` and `sent_at` keep, per client (`key`), the numbers written to its socket and when. A
    send on a closed connection goes to `send_failed`."""

    def __init__(self, clients, tag, interval):
        self.clients, self.tag, self.interval = clients, tag, interval
        self.sent = {self.key(c): [] for c in clients}
        self.sent_at = {self.key(c): [] for c in clients}
        self.stop_flag = False
        self.errors = []
        self.tasks = []

    def key(self, c):
        """The client's key in `sent`: its client id."""
        return c.id

    def content(self, c, n):
        """The text of client c's n-th message: "<tag>:<n>"."""
        return f"{self.tag}:{n}"

    def send_failed(self, c, e):
        """Records the failure in `errors` and stops c's traffic (True)."""
        self.errors.append(f"{c.label}: send failed, connection closed ({e})")
        return True

    def start(self):
        self.tasks = [asyncio.create_task(self._run(c)) for c in self.clients]

    async def _run(self, c):
        n = 0
        while not self.stop_flag:
            n += 1
            try:
                await c.say(self.content(c, n))
            except websockets.ConnectionClosed as e:
                if self.send_failed(c, e):
                    return
            else:
                self.sent[self.key(c)].append(n)
                self.sent_at[self.key(c)].append(time.monotonic())
            await asyncio.sleep(self.interval)

    async def stop(self):
        self.stop_flag = True
        await asyncio.gather(*self.tasks)

    def total(self):
        return sum(len(v) for v in self.sent.values())


# ---- running the checks ----------------------------------------------------------------------------


async def run_checks(checks, teardown, keep_env, dump_logs, before_teardown=None):
    """Runs checks [(number, title, coroutine function, time limit)] in order and prints
    "PASS|FAIL  number  title  (seconds)  detail" for each, then the count passed; dumps the logs
    after a failed check. Check number `teardown` is skipped when the environment sets keep_env=1,
    else `before_teardown` runs first. 1 if any check failed, else 0."""
    failed = 0
    for num, title, fn, limit in checks:
        if num == teardown and os.environ.get(keep_env) == "1":
            print(f"SKIP  {num}  {title}  ({keep_env}=1)", flush=True)
            continue
        if num == teardown and before_teardown is not None:
            await before_teardown()
        t = time.monotonic()
        try:
            detail = await asyncio.wait_for(fn(), limit)
            ok = True
        except asyncio.TimeoutError:
            ok, detail = False, f"did not finish within {limit}s"
        except Exception as e:  # noqa: BLE001 - report any failure as the check's result
            ok, detail = False, f"{type(e).__name__}: {e}"
        took = time.monotonic() - t
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {num}  {title}  ({took:.1f}s)  {detail}", flush=True)
        if not ok and num != teardown:
            await dump_logs()
    print(f"{len(checks) - failed}/{len(checks)} checks passed", flush=True)
    return 1 if failed else 0
