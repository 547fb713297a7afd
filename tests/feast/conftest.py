"""Fixtures for the Feast SDK/CLI compatibility suite (test_feast_sdk.py).

Everything runs against a real `quiver` binary: `QUIVER_BIN` (default
`target/debug/quiver` of this repository). The suite needs `feast==0.67.0` in the Python
environment that runs pytest; without feast or without the binary it is skipped (with
`QUIVER_BIN` set explicitly, a missing binary is an error instead).

Layout of one session:

- `quiver init` once into `base/` (the example repository and its generated data, whose
  history ends at the hour of the init);
- `served/`: a copy of `base/`, `quiver apply` + `quiver materialize`, served by one
  `quiver serve` for the whole session: the read, write and push tests use it. It is
  also the reference for the materialization tests (`quiver get --json` on it);
- `fresh`: per test, a copy of `base/` that is applied but NOT materialized, with its own
  `quiver serve`, for the materialization tests;
- a Feast repository per server: `sdk_repo/` copied, its `feature_store.yaml.template`
  rendered with the server's URL (`online_store: {type: remote}`), registered once with
  `feast apply` (local file registry) and copied afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`{' '.join(cmd)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def get_json(self, repo: Path, *args: str) -> dict:
        """`quiver --json get ...`: the server's /get-online-features answer, from the CLI."""
        return json.loads(self.run(repo, "--json", "get", *args).stdout)


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
    port = free_port()
    log = repo.parent / f"{repo.name}-serve.log"
    handle = open(log, "wb")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    proc = subprocess.Popen(
        [str(quiver.bin), "--repo", str(repo), "serve", "--bind", f"127.0.0.1:{port}"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    handle.close()
    server = Server(repo=repo, url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"quiver serve exited {proc.returncode}:\n{server.log_text()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
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

    def store(self):
        return feast.FeatureStore(repo_path=str(self.feast_repo))


@pytest.fixture(scope="session")
def quiver() -> Quiver:
    return Quiver(_quiver_bin())


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feast-sdk")


@pytest.fixture(scope="session")
def base_repo(quiver: Quiver, workdir: Path) -> Path:
    """`quiver init`: definitions and generated data, not applied (copied per stack)."""
    base = workdir / "base"
    quiver.run(None, "init", str(base))
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
    update() makes no call). Its data/ holds Quiver's generated rows in Feast's schema."""
    import pandas as pd

    dest = workdir / "feast-template"
    shutil.copytree(SDK_REPO, dest, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (dest / "data").mkdir()
    drivers = pd.read_parquet(base_repo / "data" / "driver_stats.parquet")
    drivers = drivers[drivers["conv_rate"].notna()].copy()
    drivers["quality"] = drivers["conv_rate"] * drivers["acc_rate"]
    drivers.to_parquet(dest / "data" / "driver_stats.parquet", index=False)
    shutil.copy(base_repo / "data" / "customer_stats.parquet", dest / "data" / "customer_stats.parquet")
    render_yaml(dest, "http://127.0.0.1:9")
    run_feast(dest, "apply")
    return dest


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
    """The materialized example behind one `quiver serve` for the whole session."""
    repo = copy_repo(base_repo, workdir / "served", quiver, materialize=True)
    server = start_server(quiver, repo)
    try:
        yield Stack(repo, server, feast_repo_for(feast_template, workdir / "feast-served", server.url))
    finally:
        server.stop()


@pytest.fixture
def fresh(quiver: Quiver, tmp_path: Path, base_repo: Path, feast_template: Path, request):
    """Per test: the example applied but not materialized (empty online store), served."""
    repo = copy_repo(base_repo, tmp_path / "quiver", quiver, materialize=False)
    server = start_server(quiver, repo)
    try:
        yield Stack(repo, server, feast_repo_for(feast_template, tmp_path / "feast", server.url))
    finally:
        server.stop()
        if getattr(request.node, "rep_call_failed", False):
            sys.stderr.write(f"--- quiver serve log ({repo}):\n{server.log_text()[-4000:]}\n")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed
