#!/usr/bin/env python3
"""Soak test of the Quiver feature server against one repository and a private Redis.

    python3 benches/soak.py --binary target/release/quiver [--minutes 10] [--seed 1] [--report FILE]

Not run by CI. Standard library only (Python 3.9+); needs `redis-server` on the PATH (or
`--redis-server`). One process orchestrates everything:

- a fresh example repository (`quiver init`, online store = a private Redis on a free
  port started with `--save '' --appendonly no`), `quiver apply`, and `quiver serve`;
- lookups at a steady rate (`--lookup-rate`, over `--lookup-threads` keep-alive
  connections): 1 to 20 random drivers, half from the example's drivers (1001-1100), half
  from the pushed range, 20 % through the `driver_ranking` service (with customers);
- pushes (`--push-rate` requests/s, 1 to `--max-rows` rows each) to `online`, `offline`
  and `online_and_offline`, for a dedicated range of drivers (5001..5000+`--push-drivers`)
  that no source holds; every row gets an event time strictly greater than every earlier
  row's (globally: the event time identifies the row), one second in the past, and
  `avg_daily_trips` = the row's sequence number; rows of one request are shuffled. A push
  that fails with a 5xx or a transport error is retried (the same rows: pushes are
  idempotent) until it succeeds, as a client would; every failed attempt is counted;
- a materialization every `--materialize-every` s, alternating `POST /materialize` (all
  views, all history up to now) and `POST /materialize-incremental` (409 = busy, counted
  apart);
- an export every `--export-every` s: `quiver export --materialize` (its own process) of a
  spine of every pushed driver at "now"; each one is checked: a driver's row must be one
  pushed to the offline store for that driver, no later than the spine time, and no older
  than the latest offline row acknowledged before the export started;
- Redis stopped twice (at `--restart-at` fractions of the run: `kill -9`, then `SHUTDOWN
  NOSAVE`), kept down `--redis-down` s, then started again on the same port, empty;
- every 5 s: the server's RSS (VmRSS, VmHWM, anonymous and file-backed), CPU time,
  threads and open files, Redis' RSS and key count, the size of the offline folder, and
  `GET /health`.

A rate or period of 0 (`--lookup-rate 0`, `--push-rate 0`, `--materialize-every 0`,
`--export-every 0`, `--restart-at ""`) turns that part of the load off, and
`--push-targets` narrows the pushes, to find which part of the load causes an effect.

Errors are counted by operation + HTTP status + `kind` (or transport error), apart for
requests that overlap an outage window (from stopping Redis until it answers PING again
plus `--outage-grace` s) and the rest. Every answered lookup of a pushed driver is checked
against the rows pushed (value, event time, driver).

The end, after the load stops:
1. quiescence: retried pushes drain, the last materialization and export finish;
2. check "online after the last restart": for every pushed driver, the online value is a
   row pushed for that driver and is no older than the newest row acknowledged by an
   online push that started after Redis came back the last time (what Redis lost in the
   restarts is expected to be gone; what was written after them is not);
3. repair what the restarts legitimately lost: re-push (to online) each driver's latest
   online-only row, then `POST /materialize` up to T (after the last push), which writes
   the latest offline row of every driver; newer-wins keeps the newer of the two;
4. reference: per driver, online = the latest row pushed (any target); export at T =
   the latest row pushed to the offline store (`offline` or `online_and_offline`);
5. online check: lookups of every pushed driver equal the reference (values and event
   times; NOT_FOUND for drivers never pushed) and the example's 100 drivers are PRESENT;
   export check: `quiver export` (no --materialize) of every pushed driver at T equals the
   reference (NULLs for drivers without offline rows).

Exit status 1 when an error happened outside the outage windows or a check failed
(including RSS growth beyond `--rss-growth-limit` on runs of 4 minutes or more).
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import heapq
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "quality"]
FEATURE_REFS = [f"{VIEW}:{f}" for f in FEATURES]
SOURCE_DRIVERS = range(1001, 1101)
CUSTOMERS = range(10001, 10051)
PUSHED_BASE = 5000
TARGETS = ["online", "offline", "online_and_offline"]
OFFLINE_TARGETS = ("offline", "online_and_offline")
ONLINE_TARGETS = ("online", "online_and_offline")
TTL_US = 86_400 * 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------- small helpers


def now_us() -> int:
    return time.time_ns() // 1000


def fmt_us(us: int) -> str:
    t = EPOCH + dt.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(s: str) -> int:
    s = s.strip().replace(" ", "T")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # fromisoformat before 3.11 wants exactly 3 or 6 fraction digits
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, zone = rest[:i], rest[i:]
        s = f"{head}.{(frac + '000000')[:6]}{zone}"
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q * (len(v) - 1)))))
    return v[k]


def proc_status(pid):
    """VmRSS/VmHWM in KiB and Threads of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    out = {}
    for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
        if k in fields:
            out[k] = int(fields[k].split()[0])
    out["Threads"] = int(fields.get("Threads", "0").strip() or 0)
    return out


def proc_cpu_seconds(pid):
    """utime + stime of a process in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def body_kind(status, body):
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            return str(doc.get("kind") or doc.get("status") or "?"), str(doc.get("error", ""))[:300]
    except (ValueError, TypeError):
        pass
    return "non-json", (body or b"")[:200].decode("utf-8", "replace")


# ---------------------------------------------------------------- HTTP client


class Result:
    __slots__ = ("status", "body", "t0", "t1", "transport")

    def __init__(self, status, body, t0, t1, transport=None):
        self.status, self.body, self.t0, self.t1, self.transport = status, body, t0, t1, transport

    def json(self):
        return json.loads(self.body)

    def key(self, op):
        if self.transport:
            return f"{op} transport {self.transport}", ""
        kind, msg = body_kind(self.status, self.body)
        return f"{op} {self.status} {kind}", msg


class Http:
    """One keep-alive HTTP/1.1 connection; no automatic retries (every failure counts)."""

    def __init__(self, port, timeout=30.0):
        self.port, self.timeout = port, timeout
        self.conn, self.last_used = None, 0.0

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn = None

    def post(self, path, payload):
        return self.request("POST", path, json.dumps(payload, separators=(",", ":")).encode())

    def get(self, path):
        return self.request("GET", path, None)

    def request(self, method, path, body):
        # the server closes connections idle for 60 s; do not race it
        if self.conn is not None and time.monotonic() - self.last_used > 45:
            self.close()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"content-type": "application/json"} if body is not None else {}
        t0 = time.monotonic()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            if (resp.getheader("connection") or "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Result(None, None, t0, time.monotonic(), type(e).__name__)
        self.last_used = time.monotonic()
        return Result(resp.status, data, t0, self.last_used)


# ---------------------------------------------------------------- processes


class Redis:
    def __init__(self, exe, port, workdir):
        self.exe, self.port = exe, port
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.log = open(os.path.join(workdir, "redis.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self.wait_ready()

    def command(self, *args, timeout=2.0):
        """One RESP command on a fresh connection; the raw reply (or b'' when closed)."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(payload)
            try:
                return s.recv(65536)
            except OSError:
                return b""

    def wait_ready(self, limit=30.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see redis.log")
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def stop(self, method):
        if self.proc is None or self.proc.poll() is not None:
            return
        if method == "SIGKILL":
            self.proc.send_signal(signal.SIGKILL)
        elif method == "SHUTDOWN NOSAVE":
            try:
                self.command("SHUTDOWN", "NOSAVE")
            except OSError:
                pass
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def dbsize(self):
        try:
            r = self.command("DBSIZE", timeout=0.5)
            return int(r[1:].split(b"\r\n")[0]) if r.startswith(b":") else None
        except (OSError, ValueError):
            return None


# ---------------------------------------------------------------- the ledger of pushed rows


class Row:
    __slots__ = ("seq", "driver", "event_us", "created_us", "conv", "acc", "trips", "quality", "target")


class Push:
    __slots__ = ("id", "rows", "target", "payload", "attempts", "first_t", "state", "ack_t0")


class Ledger:
    """Every row generated, which pushes were acknowledged, and when."""

    def __init__(self, drivers, rng):
        self.lock = threading.Lock()
        self.drivers = drivers
        self.rng = rng
        self.last_event = 0
        self.rows = {}         # seq -> Row
        self.by_event = {}     # event_us -> Row (event times are globally unique)
        self.pushes = []
        self.offline_acked_max = {}  # driver -> max event_us of acknowledged offline rows

    def new_push(self, target, n):
        p = Push()
        with self.lock:
            p.id = len(self.pushes)
            p.rows = []
            for _ in range(n):
                r = Row()
                r.seq = len(self.rows) + 1
                r.driver = self.rng.choice(self.drivers)
                # strictly increasing, one second in the past (never in the future)
                r.event_us = max(self.last_event + 1, now_us() - 1_000_000)
                self.last_event = r.event_us
                r.created_us = now_us()
                r.conv = self.rng.random()
                r.acc = self.rng.random()
                r.trips = r.seq
                r.quality = r.conv * r.acc
                r.target = target
                self.rows[r.seq] = r
                self.by_event[r.event_us] = r
                p.rows.append(r)
            self.pushes.append(p)
            rows = list(p.rows)
            self.rng.shuffle(rows)  # newer-wins must not depend on the order in a request
        p.target, p.attempts, p.first_t, p.state, p.ack_t0 = target, 0, time.monotonic(), "pending", None
        p.payload = {
            "feature_view": VIEW,
            "to": target,
            "df": {
                "driver_id": [r.driver for r in rows],
                "event_timestamp": [fmt_us(r.event_us) for r in rows],
                "created": [fmt_us(r.created_us) for r in rows],
                "conv_rate": [r.conv for r in rows],
                "acc_rate": [r.acc for r in rows],
                "avg_daily_trips": [r.trips for r in rows],
                "quality": [r.quality for r in rows],
            },
        }
        return p

    def ack(self, p, t0):
        with self.lock:
            p.state, p.ack_t0 = "acked", t0
            if p.target in OFFLINE_TARGETS:
                for r in p.rows:
                    if r.event_us > self.offline_acked_max.get(r.driver, -1):
                        self.offline_acked_max[r.driver] = r.event_us

    def offline_snapshot(self):
        with self.lock:
            return dict(self.offline_acked_max)

    def settled_rows(self):
        """(rows of acknowledged pushes, drivers with rows of pushes never acknowledged)."""
        with self.lock:
            rows, unsure = [], set()
            for p in self.pushes:
                if p.state == "acked":
                    rows.extend(p.rows)
                else:
                    unsure.update(r.driver for r in p.rows)
            return rows, unsure


# ---------------------------------------------------------------- statistics


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.errors = []        # (t0, t1, key, message)
        self.lookup_ok = []     # (t0, seconds)
        self.push_ok = []       # (t0, seconds) of acknowledged push requests
        self.statuses = collections.defaultdict(collections.Counter)  # minute -> status -> n
        self.violations = collections.Counter()
        self.violation_samples = []
        self.counts = collections.Counter()
        self.lookup_skipped = []  # (t, slots) the lookup threads skipped because they fell behind
        self.events = []        # (t, what, details)
        self.samples = []       # resource samples
        self.materializations = []
        self.exports = []

    def error(self, res_or_tuple, op=None):
        if isinstance(res_or_tuple, Result):
            key, msg = res_or_tuple.key(op)
            item = (res_or_tuple.t0, res_or_tuple.t1, key, msg)
        else:
            item = res_or_tuple
        with self.lock:
            self.errors.append(item)

    def violation(self, kind, detail):
        with self.lock:
            self.violations[kind] += 1
            if len(self.violation_samples) < 50:
                self.violation_samples.append({"kind": kind, "detail": detail})

    def event(self, t, what, **details):
        with self.lock:
            self.events.append((t, what, details))


# ---------------------------------------------------------------- the soak test


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.stop_load = threading.Event()   # lookups, new pushes, materializations, exports stop
        self.stop_all = threading.Event()    # retries and sampling stop
        self.aborted = None
        self.windows = []                    # [t_down, t_ready] per Redis outage
        self.pushed_drivers = [PUSHED_BASE + i for i in range(1, args.push_drivers + 1)]
        self.ledger = Ledger(self.pushed_drivers, random.Random(args.seed + 7))
        self.retry_lock = threading.Lock()
        self.retry_heap = []                 # (due, id, Push)
        self.inflight_pushes = 0
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="quiver-soak-")
        os.makedirs(self.workdir, exist_ok=True)
        self.repo = os.path.join(self.workdir, "repo")
        self.server = None
        self.redis = None
        self.t0 = None
        self.server_exit = None
        self.n_minutes = max(1, -int(-args.minutes // 1))
        self.harness_cpu0 = None
        self.bin = args.binary
        self.binary_info = {"path": args.binary}

    # ------------------------------------------------------------ setup

    def quiver(self, *argv, timeout=300, check=True):
        cmd = [self.bin, "--repo", self.repo, *argv]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return r

    def setup(self):
        a = self.args
        # The server and every `quiver export` must run the same build even if the binary is
        # rebuilt meanwhile: keep a hard link (or a copy) of it in the workdir.
        st = os.stat(a.binary)
        self.binary_info = {"path": a.binary, "size": st.st_size,
                            "mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat()}
        pinned = os.path.join(self.workdir, "quiver")
        if os.path.exists(pinned):
            os.remove(pinned)
        try:
            os.link(a.binary, pinned)
        except OSError:
            shutil.copy2(a.binary, pinned)
        self.bin = pinned
        self.binary_info["version"] = subprocess.run([pinned, "--version"], capture_output=True,
                                                     text=True).stdout.strip()
        self.redis_port, self.http_port = free_port(), free_port()
        while self.http_port == self.redis_port:
            self.http_port = free_port()
        self.redis = Redis(a.redis_server, self.redis_port, self.workdir)
        self.redis.start()
        subprocess.run([self.bin, "init", self.repo], check=True, capture_output=True)
        toml = os.path.join(self.repo, "quiver.toml")
        with open(toml) as f:
            lines = f.read().splitlines()
        out, section = [], None
        for line in lines:
            s = line.strip()
            if s.startswith("["):
                section = s
            if section == "[online]" and (s.startswith("type") or s.startswith("url") or s.startswith("# url")):
                continue
            out.append(line)
            if s == "[online]":
                out.append('type = "redis"')
                out.append(f'url = "redis://127.0.0.1:{self.redis_port}/0"')
        with open(toml, "w") as f:
            f.write("\n".join(out) + "\n")
        self.quiver("apply")
        self.server_log = open(os.path.join(self.workdir, "server.log"), "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.server = subprocess.Popen(
            [self.bin, "--repo", self.repo, "--log-format", "json", "serve",
             "--bind", f"127.0.0.1:{self.http_port}"],
            stdout=self.server_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        http_ = Http(self.http_port)
        deadline = time.monotonic() + 60
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"quiver serve exited with {self.server.returncode}; see server.log")
            r = http_.get("/health")
            if r.status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("quiver serve did not become healthy within 60 s")
            time.sleep(0.1)
        r = http_.post("/materialize", {})
        if r.status != 200:
            raise RuntimeError(f"initial materialization failed: {r.status} {r.body!r}")
        http_.close()

    # ------------------------------------------------------------ workers

    def minute(self, t):
        m = int((t - self.t0) // 60)
        # a request sent in the last instant of a run of whole minutes belongs to the last one
        return min(m, self.n_minutes - 1)

    def lookup_worker(self, idx):
        a = self.args
        rng = random.Random(a.seed * 1000 + idx)
        http_ = Http(self.http_port)
        interval = a.lookup_threads / a.lookup_rate
        next_t = time.monotonic() + rng.random() * interval
        while not self.stop_load.is_set():
            now = time.monotonic()
            if next_t > now:
                self.stop_load.wait(next_t - now)
                continue
            if now - next_t > 1.0:  # the harness fell behind: skip, do not burst
                with self.stats.lock:
                    self.stats.lookup_skipped.append((now, int((now - next_t) / interval)))
                next_t = now
            next_t += interval
            n = 1 if rng.random() < 0.7 else rng.randint(2, 20)
            drivers = [rng.choice(self.pushed_drivers) if rng.random() < 0.5 else rng.choice(SOURCE_DRIVERS)
                       for _ in range(n)]
            if rng.random() < 0.2:
                req = {"feature_service": "driver_ranking",
                       "entities": {"driver_id": drivers, "customer_id": [rng.choice(CUSTOMERS) for _ in drivers]}}
            else:
                req = {"features": FEATURE_REFS, "entities": {"driver_id": drivers}}
            res = http_.post("/get-online-features", req)
            if res.status == 200:
                with self.stats.lock:
                    self.stats.lookup_ok.append((res.t0, res.t1 - res.t0))
                self.check_lookup(res, drivers)
            else:
                self.stats.error(res, "lookup")
        http_.close()

    def check_lookup(self, res, drivers):
        """Statuses by minute; every PRESENT value of a pushed driver is a row pushed for it."""
        try:
            doc = res.json()
            names = doc["metadata"]["feature_names"]
            results = doc["results"]
            if len(results) != len(names) or any(len(r["values"]) != len(drivers) for r in results):
                raise ValueError("shape")
        except (ValueError, KeyError, TypeError) as e:
            self.stats.violation("lookup_response_malformed", {"error": str(e), "body": res.body[:300].decode(errors="replace")})
            return
        minute = self.minute(res.t0)
        counter = collections.Counter()
        cols = {name: results[i] for i, name in enumerate(names)}
        for name, col in cols.items():
            if name in ("driver_id", "customer_id"):
                continue
            counter.update(col["statuses"])
        with self.stats.lock:
            self.stats.statuses[minute].update(counter)
        view_cols = [f for f in FEATURES if f in cols]
        for j, d in enumerate(drivers):
            if d <= PUSHED_BASE:
                continue
            sts = {cols[f]["statuses"][j] for f in view_cols}
            if sts == {"NOT_FOUND"}:
                continue
            if sts != {"PRESENT"}:
                self.stats.violation("online_status_unexpected", {"driver": d, "statuses": sorted(sts)})
                continue
            times = {cols[f]["event_timestamps"][j] for f in view_cols}
            if len(times) != 1:
                self.stats.violation("online_mixed_event_times", {"driver": d, "times": sorted(times)})
                continue
            ev = parse_ts(times.pop())
            row = self.ledger.by_event.get(ev)
            got = {f: cols[f]["values"][j] for f in view_cols}
            if row is None or row.driver != d or any(got[f] != ref_value(row, f) for f in view_cols):
                self.stats.violation("online_value_not_pushed", {
                    "driver": d, "event_timestamp": fmt_us(ev), "got": got,
                    "row": row_doc(row) if row else None})

    def push_worker(self, idx):
        a = self.args
        rng = random.Random(a.seed * 2000 + idx)
        http_ = Http(self.http_port)
        interval = a.push_threads / a.push_rate
        next_t = time.monotonic() + rng.random() * interval
        while not self.stop_all.is_set():
            now = time.monotonic()
            p = None
            with self.retry_lock:
                if self.retry_heap and self.retry_heap[0][0] <= now:
                    p = heapq.heappop(self.retry_heap)[2]
                    self.inflight_pushes += 1
            if p is None and not self.stop_load.is_set() and now >= next_t:
                next_t = max(next_t + interval, now - 1.0)
                p = self.ledger.new_push(rng.choice(a.push_targets), rng.randint(1, a.max_rows))
                with self.retry_lock:
                    self.inflight_pushes += 1
            if p is None:
                wait = 0.05 if self.stop_load.is_set() else max(0.0, min(0.05, next_t - now))
                time.sleep(wait)
                continue
            self.send_push(http_, p)
            with self.retry_lock:
                self.inflight_pushes -= 1
        http_.close()

    def send_push(self, http_, p):
        res = http_.post("/push", p.payload)
        p.attempts += 1
        with self.stats.lock:
            self.stats.counts["push_attempts"] += 1
        if res.status == 200:
            self.ledger.ack(p, res.t0)
            with self.stats.lock:
                self.stats.push_ok.append((res.t0, res.t1 - res.t0))
                self.stats.counts["pushes_acked"] += 1
                self.stats.counts["rows_acked"] += len(p.rows)
                self.stats.counts[f"pushes_acked_{p.target}"] += 1
            try:
                views = res.json()["views"]
                ok = len(views) == 1 and views[0]["rows"] == len(p.rows)
                if p.target in ONLINE_TARGETS:
                    ok = ok and views[0]["online"]["rows"] == len(p.rows)
                if p.target in OFFLINE_TARGETS:
                    ok = ok and views[0]["offline"]["rows"] == len(p.rows)
            except (ValueError, KeyError, TypeError, IndexError):
                ok = False
            if not ok:
                self.stats.violation("push_response_unexpected", {"to": p.target, "rows": len(p.rows),
                                                                   "body": res.body[:400].decode(errors="replace")})
            return
        self.stats.error(res, "push")
        if res.transport or res.status >= 500:
            if time.monotonic() - p.first_t < self.args.retry_limit:
                delay = min(5.0, 0.25 * 2 ** min(p.attempts, 5))
                with self.retry_lock:
                    heapq.heappush(self.retry_heap, (time.monotonic() + delay, p.id, p))
                return
            p.state = "abandoned"
        else:
            p.state = "rejected"
        with self.stats.lock:
            self.stats.counts[f"pushes_{p.state}"] += 1

    def materializer(self):
        a = self.args
        http_ = Http(self.http_port, timeout=600)
        next_t = self.t0 + a.materialize_every / 2
        k = 0
        while not self.stop_load.wait(max(0.0, next_t - time.monotonic())):
            next_t += a.materialize_every
            path = "/materialize" if k % 2 == 0 else "/materialize-incremental"
            k += 1
            res = http_.post(path, {})
            item = {"t": round(res.t0 - self.t0, 3), "path": path, "status": res.status or res.transport,
                    "seconds": round(res.t1 - res.t0, 3)}
            with self.stats.lock:
                self.stats.materializations.append(item)
            if res.status == 200:
                with self.stats.lock:
                    self.stats.counts["materialize_ok"] += 1
            elif res.status == 409:
                with self.stats.lock:
                    self.stats.counts["materialize_busy_409"] += 1
            else:
                self.stats.error(res, "materialize")
        http_.close()

    def run_export(self, spine_us, name, materialize):
        """`quiver export` of every pushed driver at spine_us: (rows by driver, Result-like tuple)."""
        spine = os.path.join(self.workdir, f"spine-{name}.csv")
        out = os.path.join(self.workdir, f"export-{name}.csv")
        with open(spine, "w") as f:
            f.write("driver_id,event_timestamp\n")
            for d in self.pushed_drivers:
                f.write(f"{d},{fmt_us(spine_us)}\n")
        argv = ["--json", "export", "--spine", spine, "--features", ",".join(FEATURE_REFS), "--out", out]
        if materialize:
            argv.append("--materialize")
        t0 = time.monotonic()
        try:
            r = self.quiver(*argv, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return None, (t0, time.monotonic(), "export transport timeout", "")
        t1 = time.monotonic()
        if r.returncode != 0:
            kind, msg = body_kind(None, r.stderr)
            return None, (t0, t1, f"export exit={r.returncode} {kind}", msg)
        rows = {}
        with open(out, newline="") as f:
            for rec in csv.DictReader(f):
                rows.setdefault(int(rec["driver_id"]), []).append(rec)
        return rows, (t0, t1, None, "")

    def exporter(self):
        a = self.args
        next_t = self.t0 + a.export_every / 2
        n = 0
        while not self.stop_load.wait(max(0.0, next_t - time.monotonic())):
            next_t += a.export_every
            n += 1
            floor = self.ledger.offline_snapshot()   # acknowledged before the spine time
            spine_us = now_us()
            rows, (t0, t1, key, msg) = self.run_export(spine_us, f"{n:03d}", materialize=True)
            item = {"t": round(t0 - self.t0, 3), "seconds": round(t1 - t0, 3), "ok": key is None}
            if key is not None:
                self.stats.error((t0, t1, key, msg))
                item["error"] = key
            else:
                bad = self.check_periodic_export(rows, spine_us, floor)
                item["violations"] = bad
                with self.stats.lock:
                    self.stats.counts["exports_ok"] += 1
            with self.stats.lock:
                self.stats.exports.append(item)

    def check_periodic_export(self, rows, spine_us, floor):
        bad = 0
        for d in self.pushed_drivers:
            recs = rows.get(d, [])
            if len(recs) != 1:
                self.stats.violation("export_rows_per_driver", {"driver": d, "rows": len(recs)})
                bad += 1
                continue
            rec = recs[0]
            if rec["avg_daily_trips"] == "":
                if d in floor:
                    self.stats.violation("export_missing_acked_row", {
                        "driver": d, "spine": fmt_us(spine_us), "acked_event_timestamp": fmt_us(floor[d])})
                    bad += 1
                continue
            row = self.ledger.rows.get(int(rec["avg_daily_trips"]))
            problem = None
            if row is None or row.driver != d or row.target not in OFFLINE_TARGETS:
                problem = "export_row_not_pushed_offline"
            elif any(csv_value(rec[f], f) != ref_value(row, f) for f in FEATURES):
                problem = "export_values_differ"
            elif row.event_us > spine_us:
                problem = "export_row_after_spine_time"
            elif row.event_us < floor.get(d, -1):
                problem = "export_older_than_acked_row"
            if problem:
                self.stats.violation(problem, {"driver": d, "spine": fmt_us(spine_us), "got": rec,
                                               "row": row_doc(row) if row else None,
                                               "acked_floor": fmt_us(floor[d]) if d in floor else None})
                bad += 1
        return bad

    def chaos(self):
        a = self.args
        duration = a.minutes * 60
        for i, frac in enumerate(a.restart_at):
            if self.stop_load.wait(max(0.0, self.t0 + frac * duration - time.monotonic())):
                return
            method = "SIGKILL" if i % 2 == 0 else "SHUTDOWN NOSAVE"
            t_down = time.monotonic()
            window = [t_down, None]
            self.windows.append(window)
            self.redis.stop(method)
            self.stats.event(t_down, "redis stopped", method=method)
            time.sleep(a.redis_down)
            t_ready = self.redis.start()
            window[1] = t_ready
            self.stats.event(t_ready, "redis ready", down_seconds=round(t_ready - t_down, 3))

    def sampler(self):
        http_ = Http(self.http_port, timeout=30)
        offline = os.path.join(self.repo, "data", "offline")
        while True:
            t = time.monotonic()
            st = proc_status(self.server.pid)
            if self.server.poll() is not None:
                self.aborted = f"quiver serve exited with {self.server.returncode} during the run"
                self.stats.event(t, "server exited", code=self.server.returncode)
                self.stop_load.set()
                self.stop_all.set()
                return
            try:
                fds = len(os.listdir(f"/proc/{self.server.pid}/fd"))
            except OSError:
                fds = None
            rst = proc_status(self.redis.proc.pid) if self.redis.proc and self.redis.proc.poll() is None else None
            res = http_.get("/health")
            if res.status != 200:
                self.stats.error(res, "health")
            with self.stats.lock:
                self.stats.samples.append({
                    "t": round(t - self.t0, 3),
                    "rss_kib": st and st.get("VmRSS"), "hwm_kib": st and st.get("VmHWM"),
                    "rss_anon_kib": st and st.get("RssAnon"), "rss_file_kib": st and st.get("RssFile"),
                    "cpu_s": proc_cpu_seconds(self.server.pid),
                    "threads": st and st.get("Threads"), "fds": fds,
                    "redis_rss_kib": rst and rst.get("VmRSS"), "redis_keys": self.redis.dbsize(),
                    "offline_bytes": dir_size(offline), "health": res.status or res.transport,
                })
            if self.stop_all.wait(5.0):
                return

    # ------------------------------------------------------------ the run

    def run(self):
        a = self.args
        started = time.monotonic()
        print(f"soak: workdir {self.workdir}", file=sys.stderr)
        self.setup()
        self.t0 = time.monotonic()
        self.harness_cpu0 = os.times()
        print(f"soak: server pid {self.server.pid} on 127.0.0.1:{self.http_port}, redis pid "
              f"{self.redis.proc.pid} on 127.0.0.1:{self.redis_port}; running {a.minutes} min", file=sys.stderr)
        # a rate or period of 0 turns that part of the load off (to find which one causes what)
        threads = [threading.Thread(target=self.lookup_worker, args=(i,), daemon=True)
                   for i in range(a.lookup_threads if a.lookup_rate > 0 else 0)]
        pushers = [threading.Thread(target=self.push_worker, args=(i,), daemon=True)
                   for i in range(a.push_threads if a.push_rate > 0 else 0)]
        others = [threading.Thread(target=f, daemon=True) for f, on in (
            (self.materializer, a.materialize_every > 0), (self.exporter, a.export_every > 0), (self.chaos, True)) if on]
        sampler = threading.Thread(target=self.sampler, daemon=True)
        for t in threads + pushers + others + [sampler]:
            t.start()
        end = self.t0 + a.minutes * 60
        last_print = self.t0
        while time.monotonic() < end and not self.stop_load.is_set():
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if time.monotonic() - last_print >= a.progress_every:
                last_print = time.monotonic()
                self.progress()
        self.stop_load.set()
        load_end = time.monotonic()
        for t in threads + others:
            t.join()
        # quiescence: retried pushes drain (Redis is up again: chaos has joined)
        deadline = time.monotonic() + a.retry_limit + 30
        while time.monotonic() < deadline:
            with self.retry_lock:
                if not self.retry_heap and self.inflight_pushes == 0:
                    break
            time.sleep(0.1)
        self.stop_all.set()
        for t in pushers + [sampler]:
            t.join()
        with self.retry_lock:
            for _due, _id, p in self.retry_heap:
                p.state = "abandoned"
        self.quiesced = time.monotonic()
        self.stats.event(self.quiesced, "quiescent", drain_seconds=round(self.quiesced - load_end, 3))
        checks = self.final_checks() if self.aborted is None else {}
        self.stop_server()
        self.wall_seconds = time.monotonic() - started
        return self.report(checks, load_end)

    def progress(self):
        s = self.stats
        with s.lock:
            el = time.monotonic() - self.t0
            n_ok = len(s.lookup_ok)
            n_err = len(s.errors)
            c = dict(s.counts)
            rss = s.samples[-1]["rss_kib"] if s.samples else None
        print(f"soak: {el:7.1f} s  lookups ok {n_ok}  errors {n_err}  pushes acked {c.get('pushes_acked', 0)}"
              f"  materialize ok {c.get('materialize_ok', 0)}/409 {c.get('materialize_busy_409', 0)}"
              f"  exports ok {c.get('exports_ok', 0)}  violations {sum(s.violations.values())}"
              f"  rss {rss and rss // 1024} MiB", file=sys.stderr)

    # ------------------------------------------------------------ final checks

    def lookup_all(self, http_, drivers):
        out = {}
        for i in range(0, len(drivers), 100):
            batch = drivers[i:i + 100]
            res = http_.post("/get-online-features", {"features": FEATURE_REFS, "entities": {"driver_id": batch}})
            if res.status != 200:
                self.stats.error(res, "final-lookup")
                return None
            doc = res.json()
            cols = {name: doc["results"][k] for k, name in enumerate(doc["metadata"]["feature_names"])}
            for j, d in enumerate(batch):
                out[d] = {f: (cols[f]["statuses"][j], cols[f]["values"][j], cols[f]["event_timestamps"][j])
                          for f in FEATURES}
        return out

    def final_checks(self):
        a = self.args
        checks = {}
        http_ = Http(self.http_port, timeout=600)
        rows, unsure = self.ledger.settled_rows()
        with self.ledger.lock:
            unacked = [p for p in self.ledger.pushes if p.state != "acked"]
        checks["all_pushes_acknowledged"] = {
            "ok": not unacked,
            "detail": f"{len(self.ledger.pushes)} pushes, {len(unacked)} never acknowledged "
                      f"({collections.Counter(p.state for p in unacked)})" if unacked else
                      f"{len(self.ledger.pushes)} pushes ({len(rows)} rows), all acknowledged",
        }
        drivers = [d for d in self.pushed_drivers if d not in unsure]

        # 2. online state left by the run, before any repair
        last_ready = self.windows[-1][1] if self.windows and self.windows[-1][1] else self.t0
        floor = {}
        with self.ledger.lock:
            for p in self.ledger.pushes:
                if p.state == "acked" and p.target in ONLINE_TARGETS and p.ack_t0 > last_ready:
                    for r in p.rows:
                        floor[r.driver] = max(floor.get(r.driver, -1), r.event_us)
        got = self.lookup_all(http_, drivers)
        bad = []
        if got is None:
            bad.append("lookup failed")
        else:
            for d in drivers:
                v = got[d]
                st = {s for s, _, _ in v.values()}
                if st == {"NOT_FOUND"}:
                    if d in floor:
                        bad.append({"driver": d, "expected_at_least": fmt_us(floor[d]), "got": "NOT_FOUND"})
                    continue
                ev = parse_ts(v["conv_rate"][2]) if st == {"PRESENT"} else None
                row = self.ledger.by_event.get(ev) if ev is not None else None
                if (row is None or row.driver != d or any(v[f][1] != ref_value(row, f) for f in FEATURES)
                        or ev < floor.get(d, -1)):
                    bad.append({"driver": d, "expected_at_least": fmt_us(floor[d]) if d in floor else None,
                                "got": v, "row": row_doc(row) if row else None})
        checks["online_after_last_restart"] = {
            "ok": not bad, "detail": f"{len(drivers)} drivers, {len(floor)} written online after the last "
                                      f"restart, {len(bad)} wrong", "failures": bad[:20]}

        # 3. repair what the restarts lost: latest online-only row per driver, then materialize
        latest_online_only, latest_offline, latest_any = {}, {}, {}
        for r in rows:
            for table, cond in ((latest_online_only, r.target == "online"),
                                (latest_offline, r.target in OFFLINE_TARGETS), (latest_any, True)):
                if cond and (r.driver not in table or r.event_us > table[r.driver].event_us):
                    table[r.driver] = r
        repair = [latest_online_only[d] for d in drivers if d in latest_online_only]
        written = 0
        for i in range(0, len(repair), 50):
            batch = repair[i:i + 50]
            payload = {"feature_view": VIEW, "to": "online", "df": {
                "driver_id": [r.driver for r in batch],
                "event_timestamp": [fmt_us(r.event_us) for r in batch],
                "created": [fmt_us(r.created_us) for r in batch],
                "conv_rate": [r.conv for r in batch], "acc_rate": [r.acc for r in batch],
                "avg_daily_trips": [r.trips for r in batch], "quality": [r.quality for r in batch]}}
            res = http_.post("/push", payload)
            if res.status != 200:
                self.stats.error(res, "final-push")
                continue
            try:
                written += res.json()["views"][0]["online"]["written"]
            except (KeyError, IndexError, TypeError, ValueError):
                pass
        final_us = now_us()
        assert all(r.event_us < final_us for r in rows)
        mat = None
        for _ in range(600):
            res = http_.post("/materialize", {"end_ts": fmt_us(final_us)})
            if res.status != 409:
                break
            time.sleep(0.5)
        if res.status != 200:
            self.stats.error(res, "final-materialize")
        else:
            mat = res.json()
        checks["final_materialize"] = {"ok": res.status == 200,
                                       "detail": f"POST /materialize end_ts={fmt_us(final_us)}: "
                                                 f"{res.status or res.transport} in {res.t1 - res.t0:.2f} s; "
                                                 f"re-pushed {len(repair)} online-only rows first, "
                                                 f"{written} of them were missing from Redis"}

        # 5a. online = latest row pushed, any target
        got = self.lookup_all(http_, drivers)
        bad = []
        if got is None:
            bad.append("lookup failed")
        else:
            for d in drivers:
                ref = latest_any.get(d)
                v = got[d]
                if ref is None:
                    if {s for s, _, _ in v.values()} != {"NOT_FOUND"}:
                        bad.append({"driver": d, "expected": "NOT_FOUND", "got": v})
                    continue
                ok = all(v[f][0] == "PRESENT" and v[f][1] == ref_value(ref, f) and parse_ts(v[f][2]) == ref.event_us
                         for f in FEATURES)
                if not ok:
                    bad.append({"driver": d, "expected": row_doc(ref), "got": v})
        checks["final_online_equals_reference"] = {
            "ok": not bad, "detail": f"{len(drivers)} pushed drivers ({len(latest_any)} with rows), {len(bad)} differ",
            "failures": bad[:20]}
        src = self.lookup_all(http_, list(SOURCE_DRIVERS))
        present = sum(1 for d in SOURCE_DRIVERS if src and {s for s, _, _ in src[d].values()} == {"PRESENT"})
        checks["final_online_example_drivers_present"] = {
            "ok": present == len(SOURCE_DRIVERS),
            "detail": f"{present} of {len(SOURCE_DRIVERS)} example drivers PRESENT after the final materialization"}

        # 5b. export at the final time = latest offline row
        ex_rows, (t0, t1, key, msg) = self.run_export(final_us, "final", materialize=False)
        bad = []
        if key is not None:
            self.stats.error((t0, t1, key, msg))
            bad.append(f"{key}: {msg}")
        else:
            for d in drivers:
                recs = ex_rows.get(d, [])
                ref = latest_offline.get(d)
                if ref is not None and ref.event_us < final_us - TTL_US:
                    ref = None
                if len(recs) != 1:
                    bad.append({"driver": d, "rows": len(recs)})
                    continue
                rec = recs[0]
                if ref is None:
                    if any(rec[f] != "" for f in FEATURES):
                        bad.append({"driver": d, "expected": "NULLs", "got": rec})
                elif any(csv_value(rec[f], f) != ref_value(ref, f) for f in FEATURES):
                    bad.append({"driver": d, "expected": row_doc(ref), "got": rec})
        checks["final_export_equals_reference"] = {
            "ok": not bad,
            "detail": f"spine of {len(drivers)} drivers at {fmt_us(final_us)} ({len(latest_offline)} with offline "
                      f"rows), {len(bad)} differ" + (f"; export took {t1 - t0:.2f} s" if key is None else ""),
            "failures": bad[:20]}
        http_.close()
        return checks

    def stop_server(self):
        if self.server and self.server.poll() is None:
            t = time.monotonic()
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server_exit = self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server_exit = "killed after 60 s"
                self.server.wait()
            self.server_stop_seconds = time.monotonic() - t
        elif self.server:
            self.server_exit = self.server.returncode
            self.server_stop_seconds = None

    def cleanup(self):
        for proc in (self.server, self.redis and self.redis.proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------ report

    def report(self, checks, load_end):
        a, s = self.args, self.stats
        grace = a.outage_grace
        windows = [(w[0], (w[1] or load_end) + grace) for w in self.windows]

        def inside(t0, t1):
            return any(t0 <= e and t1 >= b for b, e in windows)

        by_kind = collections.defaultdict(lambda: {"outside": 0, "inside": 0, "first_s": None, "last_s": None,
                                                   "sample": ""})
        for t0, t1, key, msg in s.errors:
            where = "inside" if inside(t0, t1) else "outside"
            k = by_kind[key]
            k[where] += 1
            k["first_s"] = round(t0 - self.t0, 3) if k["first_s"] is None else k["first_s"]
            k["last_s"] = round(t0 - self.t0, 3)
            if msg and (not k["sample"] or where == "outside"):
                k["sample"] = msg
        outside = sum(v["outside"] for v in by_kind.values())
        inside_n = sum(v["inside"] for v in by_kind.values())

        minutes = {m: {"lat": [], "lat_out": [], "errors": 0, "skipped": 0, "pushes": 0, "push_lat": []}
                   for m in range(self.n_minutes)}
        for t0, sec in s.push_ok:
            if t0 < load_end:
                minutes[self.minute(t0)]["push_lat"].append(sec)
        for t0, sec in s.lookup_ok:
            minutes[self.minute(t0)]["lat"].append(sec)
            if not inside(t0, t0 + sec):
                minutes[self.minute(t0)]["lat_out"].append(sec)
        for t0, _t1, key, _ in s.errors:
            if key.startswith("lookup ") and t0 < load_end:
                minutes[self.minute(t0)]["errors"] += 1
        for t, n in s.lookup_skipped:
            minutes[self.minute(t)]["skipped"] += n
        with self.ledger.lock:
            for p in self.ledger.pushes:
                if p.ack_t0 is not None and p.ack_t0 < load_end:
                    minutes[self.minute(p.ack_t0)]["pushes"] += 1
        per_minute = []
        load_s = load_end - self.t0
        for m in sorted(minutes):
            lat = minutes[m]["lat"]
            span = max(1e-9, min(60.0, load_s - 60 * m) if m < self.n_minutes - 1 else load_s - 60 * m)
            smp = [x for x in s.samples if x["rss_kib"] and min(int(x["t"] // 60), self.n_minutes - 1) == m]
            rss = [x["rss_kib"] for x in smp]
            cpu = [x for x in s.samples if x.get("cpu_s") is not None]
            cpu_in = [x for x in cpu if 60 * m <= x["t"] <= 60 * (m + 1)]
            cpu_pct = (round(100 * (cpu_in[-1]["cpu_s"] - cpu_in[0]["cpu_s"]) / (cpu_in[-1]["t"] - cpu_in[0]["t"]), 1)
                       if len(cpu_in) >= 2 and cpu_in[-1]["t"] > cpu_in[0]["t"] else None)
            st = s.statuses.get(m, collections.Counter())
            tot = sum(st.values())
            per_minute.append({
                "minute": m + 1, "lookups_ok": len(lat), "lookup_errors": minutes[m]["errors"],
                "lookups_per_s": round(len(lat) / span, 1), "lookup_slots_skipped": minutes[m]["skipped"],
                "p50_ms": ms(percentile(lat, 0.50)), "p99_ms": ms(percentile(lat, 0.99)),
                "max_ms": ms(max(lat) if lat else None),
                "p99_ms_outside_outages": ms(percentile(minutes[m]["lat_out"], 0.99)),
                "not_found_pct": round(100.0 * st.get("NOT_FOUND", 0) / tot, 2) if tot else None,
                "pushes_acked": minutes[m]["pushes"],
                "push_p50_ms": ms(percentile(minutes[m]["push_lat"], 0.50)),
                "push_p99_ms": ms(percentile(minutes[m]["push_lat"], 0.99)),
                "rss_min_mib": mib(min(rss)) if rss else None, "rss_max_mib": mib(max(rss)) if rss else None,
                "server_cpu_pct": cpu_pct,
                "offline_mib": round(max(x["offline_bytes"] for x in smp) / 1048576, 1) if smp else None,
            })

        outages = []
        for i, w in enumerate(self.windows):
            first_ok = min((t0 for t0, _ in s.lookup_ok if w[1] and t0 >= w[1]), default=None)
            outages.append({
                "n": i + 1, "method": "SIGKILL" if i % 2 == 0 else "SHUTDOWN NOSAVE",
                "down_at_s": round(w[0] - self.t0, 3),
                "ready_at_s": round(w[1] - self.t0, 3) if w[1] else None,
                "first_ok_lookup_after_ready_s": round(first_ok - w[1], 3) if first_ok else None,
                "window_end_s": round((w[1] or load_end) + grace - self.t0, 3),
            })

        rss_all = [(x["t"], x["rss_kib"]) for x in s.samples if x["rss_kib"]]
        rss_check = rss_growth(rss_all, a.minutes, a.rss_growth_limit)
        checks = dict(checks)
        checks["no_errors_outside_outages"] = {"ok": outside == 0,
                                               "detail": f"{outside} outside, {inside_n} inside the outage windows"}
        checks["no_consistency_violations"] = {"ok": not s.violations,
                                               "detail": dict(s.violations) or "none",
                                               "failures": s.violation_samples[:20]}
        n_exports = sum(1 for e in s.exports if e["ok"])
        checks["periodic_exports_ran"] = {"ok": n_exports > 0 if a.export_every > 0 else None,
                                          "detail": f"{n_exports} of {len(s.exports)} succeeded"}
        checks["rss_flat"] = rss_check
        checks["server_ran_to_the_end"] = {"ok": self.aborted is None and self.server_exit == 0,
                                           "detail": self.aborted or f"exit code {self.server_exit} after SIGTERM, "
                                                                     f"stopped in {fmt_s(getattr(self, 'server_stop_seconds', None))}"}
        ok = all(c["ok"] is not False for c in checks.values())
        cpu = os.times()
        harness_cpu = (cpu.user - self.harness_cpu0.user) + (cpu.system - self.harness_cpu0.system)
        log_levels, log_samples = scan_server_log(os.path.join(self.workdir, "server.log"))

        rep = {
            "ok": ok,
            "binary": a.binary, "binary_info": self.binary_info, "minutes": a.minutes, "seed": a.seed, "workdir": self.workdir,
            "wall_seconds": round(self.wall_seconds, 1),
            "load_seconds": round(load_s, 1),
            "harness_cpu_seconds": round(harness_cpu, 1),
            "config": {k: v for k, v in vars(a).items() if k not in ("report",)},
            "counts": dict(s.counts) | {"lookups_ok": len(s.lookup_ok), "lookup_slots_skipped": sum(n for _, n in s.lookup_skipped),
                                         "lookup_slots_skipped_outside_outages":
                                             sum(n for t, n in s.lookup_skipped if not inside(t - 1.0, t)),
                                         "rows_generated": len(self.ledger.rows)},
            "outages": outages,
            "errors": {k: by_kind[k] for k in sorted(by_kind)},
            "errors_outside": outside, "errors_inside": inside_n,
            "per_minute": per_minute,
            "materializations": s.materializations,
            "exports": s.exports,
            "events": [{"t": round(t - self.t0, 3), "what": w, **d} for t, w, d in s.events],
            "samples": s.samples,
            "server_log": {"levels": log_levels, "samples": log_samples},
            "checks": checks,
        }
        print_report(rep)
        path = a.report or os.path.join(self.workdir, "report.json")
        with open(path, "w") as f:
            json.dump(rep, f, indent=1, default=str)
        print(f"\nreport written to {path}")
        return rep


# ---------------------------------------------------------------- report helpers


def ref_value(row, f):
    return {"conv_rate": row.conv, "acc_rate": row.acc, "avg_daily_trips": row.trips, "quality": row.quality}[f]


def csv_value(s, f):
    if s == "":
        return None
    return int(s) if f == "avg_daily_trips" else float(s)


def row_doc(row):
    return {"seq": row.seq, "driver": row.driver, "event_timestamp": fmt_us(row.event_us), "to": row.target,
            "conv_rate": row.conv, "acc_rate": row.acc, "avg_daily_trips": row.trips, "quality": row.quality}


def ms(sec):
    return None if sec is None else round(sec * 1000, 2)


def mib(kib):
    return round(kib / 1024, 1)


def fmt_s(x):
    return "-" if x is None else f"{x:.2f} s"


def rss_growth(samples, minutes, limit):
    """Max RSS of the last minute vs the second minute (the first is warm-up), and the slope
    of a least-squares line through the samples after the first minute. Short runs (< 3
    minutes of samples) compare the second half with the first half instead."""
    if len(samples) < 4:
        return {"ok": None, "detail": "too few samples"}
    total = samples[-1][0]
    if total >= 180:
        base = [r for t, r in samples if 60 <= t < 120]
        last = [r for t, r in samples if t >= total - 60]
        what, start = "second minute", 60
    else:
        base = [r for t, r in samples if t < total / 2]
        last = [r for t, r in samples if t >= total / 2]
        what, start = "first half", total / 4
    b, l = max(base), max(last)
    growth = (l - b) / b
    tail = [(t, r) for t, r in samples if t >= start]
    n = len(tail)
    mt = sum(t for t, _ in tail) / n
    mr = sum(r for _, r in tail) / n
    var = sum((t - mt) ** 2 for t, _ in tail)
    slope = (sum((t - mt) * (r - mr) for t, r in tail) / var) * 60 / 1024 if var else 0.0  # MiB per minute
    enforced = minutes >= 4
    detail = (f"max RSS {mib(b)} MiB in the {what} -> {mib(l)} MiB in the "
              f"{'last minute' if total >= 180 else 'second half'} ({growth * 100:+.1f} %, limit {limit * 100:.0f} %); "
              f"slope {slope:+.1f} MiB/min after {start:.0f} s; overall {mib(min(r for _, r in samples))}-"
              f"{mib(max(r for _, r in samples))} MiB")
    if not enforced:
        detail += "; not enforced on runs shorter than 4 minutes"
    return {"ok": (growth <= limit) if enforced else None, "detail": detail, "growth": round(growth, 4),
            "slope_mib_per_min": round(slope, 2)}


def scan_server_log(path):
    levels, samples = collections.Counter(), []
    seen = set()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    doc = json.loads(line)
                except ValueError:
                    levels["text"] += 1
                    continue
                lvl = doc.get("level", "?")
                levels[lvl] += 1
                fields = doc.get("fields", {})
                msg = f"{lvl} {doc.get('target', '')}: {fields.get('message', '')} {fields.get('error', '')}".strip()
                if lvl in ("WARN", "ERROR") and msg not in seen and len(samples) < 10:
                    seen.add(msg)
                    samples.append(msg[:300])
    except OSError:
        pass
    return dict(levels), samples


def print_report(rep):
    p = print
    p(f"\n== Quiver soak test: {rep['minutes']} min of load, {rep['wall_seconds']} s wall, seed {rep['seed']}")
    bi = rep["binary_info"]
    p(f"   binary {rep['binary']} ({bi.get('version')}, {bi.get('size')} bytes, modified {bi.get('mtime')})")
    p(f"   workdir {rep['workdir']}")
    c = rep["counts"]
    p(f"   load {rep['load_seconds']} s; harness CPU {rep['harness_cpu_seconds']} s")
    p(f"\nWork done: {c.get('lookups_ok', 0)} lookups ok ({c.get('lookup_slots_skipped', 0)} slots skipped because "
      f"the lookup threads fell behind, {c.get('lookup_slots_skipped_outside_outages', 0)} of them outside outages), "
      f"{c.get('pushes_acked', 0)} pushes acknowledged ({c.get('rows_acked', 0)} rows, "
      f"{c.get('push_attempts', 0)} attempts; online {c.get('pushes_acked_online', 0)}, "
      f"offline {c.get('pushes_acked_offline', 0)}, both {c.get('pushes_acked_online_and_offline', 0)}), "
      f"{c.get('materialize_ok', 0)} materializations ok + {c.get('materialize_busy_409', 0)} busy (409), "
      f"{c.get('exports_ok', 0)} exports ok of {len(rep['exports'])}")
    p("\nRedis outages (window = stop .. PING answered + grace):")
    if not rep["outages"]:
        p("  none")
    for o in rep["outages"]:
        p(f"  #{o['n']} {o['method']:<15} down at {o['down_at_s']:8.1f} s, ready at {o['ready_at_s']} s, "
          f"first good lookup +{o['first_ok_lookup_after_ready_s']} s, window ends {o['window_end_s']} s")
    p(f"\nErrors by kind ({rep['errors_outside']} outside, {rep['errors_inside']} inside the outage windows):")
    if not rep["errors"]:
        p("  none")
    else:
        p(f"  {'operation status kind':<48} {'outside':>8} {'inside':>8}  first..last s")
        for k, v in rep["errors"].items():
            p(f"  {k:<48} {v['outside']:>8} {v['inside']:>8}  {v['first_s']}..{v['last_s']}")
            if v["outside"] and v["sample"]:
                p(f"      e.g. {v['sample'][:200]}")
    p("\nPer minute (latencies of answered requests, client side):")
    p(f"  {'':>3} {'lookups':-^63} {'pushes':-^22}")
    p(f"  {'min':>3} {'ok':>7} {'/s':>6} {'err':>5} {'p50 ms':>7} {'p99 ms':>7} {'p99 out':>7} {'max ms':>8} {'NF %':>6} "
      f"{'acked':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>13} {'CPU %':>6} {'offline MiB':>11}")
    for m in rep["per_minute"]:
        rss = f"{m['rss_min_mib']}-{m['rss_max_mib']}" if m["rss_min_mib"] is not None else "-"
        p(f"  {m['minute']:>3} {m['lookups_ok']:>7} {m['lookups_per_s']:>6} {m['lookup_errors']:>5} "
          f"{str(m['p50_ms']):>7} {str(m['p99_ms']):>7} {str(m['p99_ms_outside_outages']):>7} {str(m['max_ms']):>8} "
          f"{str(m['not_found_pct']):>6} "
          f"{m['pushes_acked']:>6} {str(m['push_p50_ms']):>7} {str(m['push_p99_ms']):>7} "
          f"{rss:>13} {str(m['server_cpu_pct']):>6} {str(m['offline_mib']):>11}")
    p("  (p99 out = p99 of the lookups outside the outage windows; NF % = share of NOT_FOUND feature")
    p("   values: the pushed range starts empty, and Redis restarts wipe the example drivers until the next")
    p("   full materialization; RSS and CPU % (100 = one core) of the server process; offline MiB = the")
    p("   offline folder, superseded files included)")
    mats = rep["materializations"]
    if mats:
        secs = [m["seconds"] for m in mats if m["status"] == 200]
        p(f"\nMaterializations: {len(mats)} requests, statuses "
          f"{dict(collections.Counter(str(m['status']) for m in mats))}, "
          f"seconds max {max(secs) if secs else '-'}")
    exps = rep["exports"]
    if exps:
        secs = [e["seconds"] for e in exps if e["ok"]]
        p(f"Exports (CLI, --materialize): {len(exps)} runs, {sum(1 for e in exps if e['ok'])} ok, "
          f"seconds max {max(secs) if secs else '-'}")
    smp = rep["samples"]
    if smp:
        last = smp[-1]
        p(f"Resources at the end: threads {last['threads']}, open files {last['fds']} "
          f"(max {max((x['fds'] or 0) for x in smp)}), Redis RSS {last['redis_rss_kib'] and mib(last['redis_rss_kib'])} MiB, "
          f"offline folder {round(last['offline_bytes'] / 1048576, 1)} MiB; server RSS {mib(last['rss_kib'])} MiB "
          f"= anonymous {last['rss_anon_kib'] and mib(last['rss_anon_kib'])} + file {last['rss_file_kib'] and mib(last['rss_file_kib'])}")
    lv = rep["server_log"]["levels"]
    p(f"Server log lines by level: {lv or 'none'}")
    for line in rep["server_log"]["samples"]:
        p(f"  {line[:200]}")
    p("\nChecks:")
    for name, chk in rep["checks"].items():
        mark = {True: "PASS", False: "FAIL", None: "info"}[chk["ok"]]
        p(f"  {mark} {name}: {chk['detail']}")
        for f in (chk.get("failures") or [])[:5]:
            p(f"       {json.dumps(f, default=str)[:300]}")
    p(f"\nResult: {'PASS' if rep['ok'] else 'FAIL'}")


# ---------------------------------------------------------------- main


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    default_bin = os.path.join(root, "target", "release", "quiver")
    if not os.path.exists(default_bin):
        default_bin = os.path.join(root, "target", "debug", "quiver")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=default_bin, help="the quiver binary (default: target/release, else debug)")
    ap.add_argument("--minutes", type=float, default=10.0, help="duration of the load (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", help="write the JSON report here (default: WORKDIR/report.json)")
    ap.add_argument("--workdir", help="where the repository, logs and exports go (default: a new temp folder)")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--lookup-rate", type=float, default=300.0, help="lookups per second, in total")
    ap.add_argument("--lookup-threads", type=int, default=4)
    ap.add_argument("--push-rate", type=float, default=5.0, help="push requests per second, in total")
    ap.add_argument("--push-threads", type=int, default=2)
    ap.add_argument("--push-targets", default=",".join(TARGETS),
                    help="comma-separated push targets to pick from at random (default: all three)")
    ap.add_argument("--max-rows", type=int, default=4, help="rows per push: 1..N")
    ap.add_argument("--push-drivers", type=int, default=200, help="drivers 5001..5000+N receive the pushes")
    ap.add_argument("--materialize-every", type=float, default=30.0, help="seconds")
    ap.add_argument("--export-every", type=float, default=20.0, help="seconds")
    ap.add_argument("--restart-at", default="0.3,0.6",
                    help="when to stop Redis, as fractions of the run (default 0.3,0.6: minutes 3 and 6 of 10)")
    ap.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis stays down")
    ap.add_argument("--outage-grace", type=float, default=5.0,
                    help="seconds after Redis answers again that still count as the outage")
    ap.add_argument("--retry-limit", type=float, default=120.0, help="seconds a failed push is retried")
    ap.add_argument("--rss-growth-limit", type=float, default=0.25,
                    help="largest RSS growth, last minute vs second minute (enforced from 4 minutes)")
    ap.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--clean", action="store_true", help="delete the workdir after a passing run")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.push_targets = [t.strip() for t in args.push_targets.split(",") if t.strip()]
    if not args.push_targets or set(args.push_targets) - set(TARGETS):
        sys.exit(f"soak: --push-targets takes some of {','.join(TARGETS)}")
    args.restart_at = [float(x) for x in args.restart_at.split(",") if x.strip()]
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"soak: {args.binary} is not an executable")
    if shutil.which(args.redis_server) is None and not os.access(args.redis_server, os.X_OK):
        sys.exit(f"soak: {args.redis_server} not found")
    soak = Soak(args)
    try:
        rep = soak.run()
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        if soak.redis is not None:
            soak.redis.stop("SIGTERM")
        soak.cleanup()
    if rep["ok"] and args.clean and not args.workdir:
        shutil.rmtree(soak.workdir, ignore_errors=True)
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
