"""Fixtures for the Feast SDK/CLI compatibility suite (test_feast_sdk.py).

Everything runs against a real `quiver` binary: `QUIVER_BIN` (default
`target/debug/quiver` of this repository). The suite needs `feast==0.67.0` in the Python
environment that runs pytest (another version is an error); without feast or without the
binary it is skipped (with `QUIVER_BIN` set explicitly, a missing binary is an error).

Layout of one session:

- `base/`: a Quiver repository with the definitions of `sdk_repo/quiver_definitions.sql`
  (Quiver's side of `sdk_repo/definitions.py`) over data generated once by `quiver init`
  (whose history ends at the hour of the init);
- `served/`: a copy of `base/`, `quiver apply` + `quiver materialize`, served by one
  `quiver serve` for the whole session: the read, write and push tests use it. It is
  also the reference for the materialization tests (`quiver get --json` on it);
- `fresh`: per test, a copy of `base/` that is applied but NOT materialized, with its own
  `quiver serve`, for the materialization tests;
- a Feast repository per server: `sdk_repo/` copied, its `feature_store.yaml.template`
  rendered with the server's URL (`online_store: {type: remote}`), registered once with
  `feast apply` (local file registry) and copied afterwards;
- `versioned`: per test, like `served` but the driver view is then changed and applied
  again, so v2 is applied while lookups still read v1 (for Feast's `version` field).

Every `quiver` process gets the environment without `QUIVER_*` variables (they override
quiver.toml: an inherited `QUIVER_ONLINE__URL` or API key must not change what is
tested); the online store is the embedded one, never a Redis of the machine. Servers
listen on free loopback ports, are stopped by their handle at teardown (also when a test
fails) and get SIGTERM from the kernel if pytest itself dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SDK_REPO = HERE / "sdk_repo"

# Importing feast is slow (~2 s) and optional: skip the whole directory without it.
feast = pytest.importorskip("feast", reason="the Feast SDK suite needs `pip install feast==0.67.0`")


def _quiver_bin() -> Path:
    explicit = os.environ.get("QUIVER_BIN")
    path = Path(explicit) if explicit else ROOT / "target" / "debug" / "quiver"
    if not path.is_file():
        if explicit:
            pytest.fail(f"QUIVER_BIN={explicit} does not exist")
        pytest.skip(f"no quiver binary at {path}; build it or set QUIVER_BIN")
    return path.resolve()


def _feast_bin() -> str:
    beside = Path(sys.executable).parent / "feast"
    if beside.is_file():
        return str(beside)
    found = shutil.which("feast")
    if not found:
        pytest.skip("the `feast` command is not installed")
    return found


def quiver_env() -> dict[str, str]:
    """The environment of every quiver process: without QUIVER_* (config overrides such
    as QUIVER_ONLINE__URL or QUIVER_SERVER__API_KEY, QUIVER_JSON, QUIVER_REPO)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies (Linux), so a killed run leaves
    no server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Quiver:
    """Runs the quiver binary."""

    bin: Path

    def run(self, repo: Path | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin)]
        if repo is not None:
            cmd += ["--repo", str(repo)]
        cmd += list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=quiver_env())
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`{' '.join(cmd)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def get_json(self, repo: Path, *args: str) -> dict:
        """`quiver --json get ...`: the server's /get-online-features answer, from the CLI."""
        return json.loads(self.run(repo, "--json", "get", *args).stdout)

    def describe(self, repo: Path, name: str) -> dict:
        """`quiver --json describe NAME`: its applied `version` and `serving_version`."""
        return json.loads(self.run(repo, "--json", "describe", name).stdout)


@dataclass
class Server:
    """One `quiver serve` process (started by this fixture, stopped by its handle)."""

    repo: Path
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_server(quiver: Quiver, repo: Path) -> Server:
    """`quiver serve` on a free loopback port; answers /health before this returns.
    Another process may take the port between the probe and the bind: then retry."""
    for attempt in range(5):
        port = free_port()
        log = repo.parent / f"{repo.name}-serve.log"
        env = quiver_env()
        env.setdefault("RUST_LOG", "info")
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                [str(quiver.bin), "--repo", str(repo), "serve", "--bind", f"127.0.0.1:{port}"],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        server = Server(repo=repo, url=f"http://127.0.0.1:{port}", proc=proc, log=log)
        try:
            if _wait_healthy(server):
                return server
        except BaseException:
            server.stop()
            raise
        # It exited: only a lost race for the port is worth another try.
        if "Address already in use" not in server.log_text() or attempt == 4:
            raise AssertionError(f"quiver serve exited {proc.returncode}:\n{server.log_text()}")
    raise AssertionError("unreachable")


def _wait_healthy(server: Server) -> bool:
    """True once /health answers 200; False if the process exited first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"quiver serve did not answer /health within 60 s:\n{server.log_text()}")


def run_feast(feast_repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real `feast` CLI in the Feast repository."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    proc = subprocess.run(
        [_feast_bin(), *args], cwd=feast_repo, capture_output=True, text=True, timeout=300, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`feast {' '.join(args)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass
class Stack:
    """A Quiver repository, its server and a Feast repository pointing at it."""

    repo: Path
    server: Server
    feast_repo: Path

    @property
    def url(self) -> str:
        return self.server.url

    def store(self, feast_default_retries: bool = False):
        """A FeatureStore on this repository. feature_store.yaml sets
        `connection_retries: 0` so a 5xx fails at once; `feast_default_retries=True` drops
        it: Feast's default, 3 retries with backoff on 429/500/502/503/504."""
        if not feast_default_retries:
            return feast.FeatureStore(repo_path=str(self.feast_repo))
        text = (self.feast_repo / "feature_store.yaml").read_text()
        other = self.feast_repo / "feature_store.default-retries.yaml"
        other.write_text("".join(l for l in text.splitlines(True) if "connection_retries" not in l))
        return feast.FeatureStore(repo_path=str(self.feast_repo), fs_yaml_file=other)


FEAST_VERSION = "0.67.0"


@pytest.fixture(scope="session")
def quiver(tmp_path_factory) -> Quiver:
    # The wire formats the tests rely on are Feast 0.67.0's: another version is an error,
    # not a skip (CI must not pass by running nothing).
    assert feast.__version__ == FEAST_VERSION, f"the suite needs feast=={FEAST_VERSION}, found {feast.__version__}"
    # A private copy: the whole session runs one binary even if a build replaces
    # QUIVER_BIN meanwhile.
    copy = tmp_path_factory.mktemp("bin") / "quiver"
    shutil.copy2(_quiver_bin(), copy)
    return Quiver(copy)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feast-sdk")


QUIVER_TOML = """\
# Written by tests/feast/conftest.py: the embedded online store (SQLite in .quiver/),
# never a Redis of the machine.
project = "rides"
definitions = ["features"]

[offline]
path = "data/offline"

[online]
type = "embedded"
"""


@pytest.fixture(scope="session")
def base_repo(quiver: Quiver, workdir: Path) -> Path:
    """A Quiver repository (not applied; copied per stack): quiver.toml and the
    definitions of sdk_repo/quiver_definitions.sql, over two of the data files `quiver
    init` generates (relative to the current clock)."""
    generated = workdir / "generated"
    quiver.run(None, "init", str(generated))
    base = workdir / "base"
    (base / "data").mkdir(parents=True)
    (base / "features").mkdir()
    for name in ("driver_stats.parquet", "customer_stats.parquet"):
        shutil.copy(generated / "data" / name, base / "data" / name)
    shutil.copy(SDK_REPO / "quiver_definitions.sql", base / "features" / "definitions.sql")
    (base / "quiver.toml").write_text(QUIVER_TOML)
    return base


def copy_repo(base: Path, dest: Path, quiver: Quiver, materialize: bool) -> Path:
    shutil.copytree(base, dest)
    quiver.run(dest, "apply")
    if materialize:
        quiver.run(dest, "materialize")
    return dest


@pytest.fixture(scope="session")
def feast_template(workdir: Path, base_repo: Path) -> Path:
    """sdk_repo/ registered with `feast apply` (no server needed: the remote online store's
    update() makes no call). Its data/ holds Quiver's generated rows in Feast's schema.
    The apply runs Feast's CLI in-process (click's runner): a subprocess would spend ~5 s
    importing feast again; the tests themselves run the `feast` command."""
    import pandas as pd

    dest = workdir / "feast-template"
    shutil.copytree(SDK_REPO, dest, ignore=shutil.ignore_patterns("__pycache__", "data", "*.sql"))
    (dest / "data").mkdir()
    drivers = pd.read_parquet(base_repo / "data" / "driver_stats.parquet")
    drivers = drivers[drivers["conv_rate"].notna()].copy()
    drivers["quality"] = drivers["conv_rate"] * drivers["acc_rate"]
    drivers.to_parquet(dest / "data" / "driver_stats.parquet", index=False)
    shutil.copy(base_repo / "data" / "customer_stats.parquet", dest / "data" / "customer_stats.parquet")
    render_yaml(dest, "http://127.0.0.1:9")
    with warnings.catch_warnings():
        # Feast's apply warns that on-demand views are experimental (trip_quote).
        warnings.filterwarnings("ignore", "On demand feature view is an experimental feature", RuntimeWarning)
        feast_cli_in_process(dest, "apply")
    return dest


def feast_cli_in_process(feast_repo: Path, *args: str) -> str:
    """Feast's CLI (`feast.cli.cli`) in this process; it chdirs and extends sys.path,
    which are put back."""
    from click.testing import CliRunner
    from feast.cli.cli import cli

    cwd, path = os.getcwd(), list(sys.path)
    try:
        result = CliRunner().invoke(cli, ["--chdir", str(feast_repo), *args])
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    if result.exit_code != 0:
        raise AssertionError(f"`feast {' '.join(args)}` exited {result.exit_code}:\n{result.output}") from result.exception
    return result.output


def render_yaml(feast_repo: Path, url: str) -> None:
    text = (SDK_REPO / "feature_store.yaml.template").read_text().replace("@QUIVER_URL@", url)
    (feast_repo / "feature_store.yaml").write_text(text)
    (feast_repo / "feature_store.yaml.template").unlink(missing_ok=True)


def feast_repo_for(template: Path, dest: Path, url: str) -> Path:
    shutil.copytree(template, dest)
    render_yaml(dest, url)
    return dest


@pytest.fixture(scope="session")
def served(quiver: Quiver, workdir: Path, base_repo: Path, feast_template: Path):
    """The base repository applied and materialized, behind one `quiver serve` for the
    whole session."""
    repo = copy_repo(base_repo, workdir / "served", quiver, materialize=True)
    server = start_server(quiver, repo)
    try:
        yield Stack(repo, server, feast_repo_for(feast_template, workdir / "feast-served", server.url))
    finally:
        server.stop()


@pytest.fixture
def versioned(quiver: Quiver, tmp_path: Path, base_repo: Path, feast_template: Path):
    """Per test: the base repository applied and materialized (v1 of every view online), then
    driver_hourly_stats changed (same rows, new query text) and applied again: v2 is the
    applied version, lookups still read v1 until v2 is materialized."""
    repo = copy_repo(base_repo, tmp_path / "quiver", quiver, materialize=True)
    views = repo / "features" / "definitions.sql"
    text = views.read_text()
    changed = text.replace("WHERE conv_rate IS NOT NULL;", "WHERE conv_rate IS NOT NULL AND 1 = 1;")
    assert changed != text, "quiver_definitions.sql changed: update the `versioned` fixture"
    views.write_text(changed)
    quiver.run(repo, "apply")
    server = start_server(quiver, repo)
    try:
        yield Stack(repo, server, feast_repo_for(feast_template, tmp_path / "feast", server.url))
    finally:
        server.stop()


@pytest.fixture
def fresh(quiver: Quiver, tmp_path: Path, base_repo: Path, feast_template: Path):
    """Per test: the base repository applied but not materialized (empty online store), served."""
    repo = copy_repo(base_repo, tmp_path / "quiver", quiver, materialize=False)
    server = start_server(quiver, repo)
    try:
        yield Stack(repo, server, feast_repo_for(feast_template, tmp_path / "feast", server.url))
    finally:
        server.stop()


@dataclass
class Exchange:
    """One HTTP exchange of the Feast client, as `requests` saw it."""

    method: str
    path: str
    params: Any
    body: Any  # the request body as sent, parsed
    status: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Wire:
    exchanges: list[Exchange] = field(default_factory=list)
    # Every attempt urllib3 makes (retries included): (method, path).
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def to(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path == path]


@pytest.fixture
def wire(monkeypatch) -> Wire:
    """Records what Feast's client sent and got back (status, body) and how many attempts
    urllib3 made: the SDK hides both (e.g. 202 vs 200, retries of a 5xx)."""
    import requests
    import urllib3.connectionpool

    recorded = Wire()
    request = requests.Session.request
    urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def spy_request(self, method, url, *args, **kwargs):
        response = request(self, method, url, *args, **kwargs)
        sent = response.request.body  # the bytes on the wire (JSON bodies only here)
        recorded.exchanges.append(
            Exchange(method, urlsplit(url).path, kwargs.get("params"), json.loads(sent) if sent else None,
                     response.status_code, response.content)
        )
        return response

    def spy_urlopen(self, method, url, *args, **kwargs):
        recorded.attempts.append((method, urlsplit(url).path))
        return urlopen(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy_request)
    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", spy_urlopen)
    return recorded


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the log of each quiver server it used."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Stack):
                rep.sections.append((f"quiver serve log ({name}, last 4000 chars)", value.server.log_text()[-4000:]))
