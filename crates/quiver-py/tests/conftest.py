"""Fixtures for the Python package's suite: the built `quiver` wheel installed in the
environment running pytest, and the `quiver` binary (`QUIVER_BIN`, default
`target/debug/quiver` of this repository) to make example repositories and to compare
against (`quiver export`, `quiver get --json`).

Every `quiver` process gets the environment without `QUIVER_*` variables, so an
inherited override cannot change what is tested; the online store is the embedded one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def quiver_bin() -> Path:
    path = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
    if not path.is_file():
        raise RuntimeError(f"no quiver binary at {path}: run `cargo build -p quiver-cli` or set QUIVER_BIN")
    return path


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}


def cli(repo: Path, *args: str) -> str:
    """Runs `quiver --repo REPO ARGS…`; returns stdout, fails the test on an error."""
    done = subprocess.run(
        [str(quiver_bin()), "--repo", str(repo), *args],
        cwd=repo,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"quiver {args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def cli_json(repo: Path, *args: str):
    return json.loads(cli(repo, *args, "--json"))


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """The example repository `quiver init` writes (data generated once)."""
    root = tmp_path_factory.mktemp("base")
    subprocess.run(
        [str(quiver_bin()), "init", str(root / "demo")],
        env=clean_env(),
        check=True,
        capture_output=True,
    )
    return root / "demo"


@pytest.fixture(scope="session")
def materialized(base, tmp_path_factory) -> Path:
    """A copy of the example, applied and materialized by the CLI: the reference."""
    repo = tmp_path_factory.mktemp("materialized") / "demo"
    shutil.copytree(base, repo)
    cli(repo, "apply")
    cli(repo, "materialize")
    return repo


@pytest.fixture
def fresh(base, tmp_path) -> Path:
    """A copy of the example, not applied."""
    repo = tmp_path / "demo"
    shutil.copytree(base, repo)
    return repo
