"""The Python package on a harness's repository, beside Feast in the same run (issue 15):

    python benches/python_sdk.py REPO RUNS --features F [--compare CLI_OUT] [--feast-venv DIR] [--json]

Run with a Python that has the `quiver` wheel installed (a release build:
`maturin build --release -m crates/quiver-py/Cargo.toml`). REPO is a materialized
repository made by `benches/user.rs` (`target/bench-data/user-<scale>`), whose
`data/spine.parquet` is the spine.

1. Quiver: `quiver.FeatureStore(REPO).get_historical_features(entity_df, F).to_df()`,
   best of RUNS, timed from opening the store to the DataFrame (the spine is read into a
   DataFrame once before, as a notebook holds it). With `--compare`, every value of the
   last DataFrame is checked against the CLI's export of the same spine and features.
2. Feast 0.67 (with `--feast-venv DIR`: a venv with `feast==0.67.0`, created there with
   pip when it has none): a Feast repository over the same
   source files (`data/driver_stats.parquet`, `data/customer_stats.parquet`), its default
   `file` offline store, `feast apply`, then `get_historical_features(entity_df,
   features).to_df()` timed the same way, once. Feast cannot compute Quiver's
   `driver_hourly_stats.quality` (an SQL expression of the view), so it gets the other
   features — one column less work than Quiver does.

Prints the times (and the comparison); `--json` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FEAST_DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
driver_stats = FileSource(name="driver_stats", path="{data}/driver_stats.parquet",
    timestamp_field="event_timestamp", created_timestamp_column="created")
customer_stats = FileSource(name="customer_stats", path="{data}/customer_stats.parquet",
    timestamp_field="event_timestamp", created_timestamp_column="created")
driver_hourly_stats = FeatureView(name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1),
    schema=[Field(name="conv_rate", dtype=Float64), Field(name="acc_rate", dtype=Float64),
            Field(name="avg_daily_trips", dtype=Int64)],
    source=driver_stats)
customer_profile = FeatureView(name="customer_profile", entities=[customer], ttl=timedelta(days=7),
    schema=[Field(name="current_balance", dtype=Float64), Field(name="avg_passenger_count", dtype=Float64),
            Field(name="lifetime_trip_count", dtype=Int64)],
    source=customer_stats)
'''

FEAST_CONFIG = """project: rides
provider: local
registry: data/registry.db
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""

FEAST_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "customer_profile:current_balance",
    "customer_profile:avg_passenger_count",
    "customer_profile:lifetime_trip_count",
]

FEAST_TIMING = """
import json, sys, time
import pandas as pd
from feast import FeatureStore
entity_df = pd.read_parquet(sys.argv[2], columns=["driver_id", "customer_id", "event_timestamp"])
started = time.perf_counter()
store = FeatureStore(repo_path=sys.argv[1])
df = store.get_historical_features(entity_df=entity_df, features=json.loads(sys.argv[3])).to_df()
print(json.dumps({"seconds": time.perf_counter() - started, "rows": len(df)}))
"""


def quiver_times(repo: Path, features: list[str], runs: int):
    import pandas as pd
    import quiver

    entity_df = pd.read_parquet(repo / "data" / "spine.parquet")
    times, df = [], None
    for _ in range(runs):
        started = time.perf_counter()
        store = quiver.FeatureStore(repo)
        df = store.get_historical_features(entity_df=entity_df, features=features).to_df()
        times.append(time.perf_counter() - started)
    return times, df


def compare(df, cli_out: Path) -> int:
    """How many values of the SDK's DataFrame differ from the CLI's export."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = pq.read_table(cli_out)
    got = pa.Table.from_pandas(df, preserve_index=False).cast(expected.schema)
    differ = 0
    for name in expected.column_names:
        a, b = got.column(name).to_pylist(), expected.column(name).to_pylist()
        differ += sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
    return differ


def feast_time(repo: Path, feast_python: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="feast-bench-") as scratch:
        feast_repo = Path(scratch)
        (feast_repo / "data").mkdir()
        (feast_repo / "feature_store.yaml").write_text(FEAST_CONFIG)
        (feast_repo / "definitions.py").write_text(
            FEAST_DEFINITIONS.format(data=(repo / "data").resolve())
        )
        feast_cli = Path(feast_python).parent / "feast"
        subprocess.run(
            [str(feast_cli), "apply"], cwd=feast_repo, check=True, capture_output=True
        )
        done = subprocess.run(
            [
                feast_python,
                "-c",
                FEAST_TIMING,
                str(feast_repo),
                str(repo / "data" / "spine.parquet"),
                json.dumps(FEAST_FEATURES),
            ],
            cwd=feast_repo,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"Feast failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def feast_python(venv: Path) -> str:
    """The venv's Python, after installing Feast 0.67.0 into it when it lacks it."""
    python = venv / "bin" / "python"
    check = "import importlib.metadata as m; assert m.version('feast') == '0.67.0'"
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        return str(python)
    print(f"installing feast==0.67.0 into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "feast==0.67.0"], check=True)
    return str(python)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("runs", type=int)
    parser.add_argument("--features", required=True)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--feast-venv", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    features = args.features.split(",")

    times, df = quiver_times(args.repo, features, args.runs)
    result = {"sdk_best": min(times), "sdk_times": times, "rows": len(df)}
    if args.compare:
        result["differ"] = compare(df, args.compare)
    if args.feast_venv:
        feast = feast_time(args.repo, feast_python(args.feast_venv))
        result["feast_seconds"] = feast["seconds"]
        result["feast_rows"] = feast["rows"]
    if args.json:
        print(json.dumps(result))
    else:
        print(textwrap.indent(json.dumps(result, indent=2), "  "))


if __name__ == "__main__":
    sys.exit(main())
