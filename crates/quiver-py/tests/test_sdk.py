"""The `quiver` Python package against the `quiver` CLI on the same repository: every
method, the Feast user's script, errors, dtypes, empty and 1 M-row spines, ctrl-c and
the GIL."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quiver
from conftest import ROOT, cli, cli_json

SERVICE_SPINE = "data/spine.parquet"


def export_cli(repo: Path, spine: str, *selection: str) -> pa.Table:
    cli(repo, "export", "--spine", spine, *selection, "--out", "cli_export.parquet")
    return pq.read_table(repo / "cli_export.parquet")


def test_apply_plan_and_the_registry(fresh):
    store = quiver.FeatureStore(repo_path=fresh)
    assert repr(store) == f"FeatureStore(repo_path={str(fresh)!r}, project='rides')"
    planned = store.plan()
    assert {(c["kind"], c["name"], c["action"]) for c in planned} >= {
        ("entity", "driver", "add"),
        ("feature_view", "driver_hourly_stats", "add"),
        ("feature_service", "driver_ranking", "add"),
    }
    assert store.apply() == planned
    assert store.plan() == [], "nothing left to change"

    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {"driver_hourly_stats", "customer_profile", "customer_trips", "trip_quote"}
    drivers = store.get_feature_view("driver_hourly_stats")
    assert drivers == views["driver_hourly_stats"]
    assert drivers.version == 1 and drivers.entities == ["driver"]
    assert drivers.ttl == timedelta(days=1)
    assert drivers.tags == {"team": "rides", "owner": "ml@example.com"}
    assert [f.name for f in drivers.features][:2] == ["conv_rate", "acc_rate"]
    assert {e.name: e.join_keys for e in store.list_entities()} == {
        "driver": ["driver_id"],
        "customer": ["customer_id"],
    }
    assert store.get_entity("driver").description == "A ride-hailing driver"
    service = store.get_feature_service("driver_ranking")
    assert service.features[:2] == ["driver_hourly_stats:conv_rate", "driver_hourly_stats:quality"]
    assert "driver_ranking" in {s.name for s in store.list_feature_services()}


def test_materialize_and_materialize_incremental_match_the_cli(fresh, materialized):
    store = quiver.FeatureStore(fresh)
    store.apply()
    end = datetime.now(timezone.utc).replace(tzinfo=None)  # naive = UTC
    reports = store.materialize(end - timedelta(days=30), end, feature_views=["driver_hourly_stats"])
    assert [r["offline"]["view"] for r in reports] == ["driver_hourly_stats"]
    assert reports[0]["online"]["written"] == 100
    later = store.materialize_incremental(end + timedelta(minutes=1))
    assert {r["offline"]["view"] for r in later} == {"driver_hourly_stats", "customer_profile", "customer_trips"}
    assert store.get_historical_features(
        pq.read_table(fresh / SERVICE_SPINE), store.get_feature_service("driver_ranking")
    ).to_arrow() == export_cli(materialized, SERVICE_SPINE, "--service", "driver_ranking")


def test_a_feast_users_script_gives_what_the_cli_gives(materialized):
    # Feast's quickstart, unchanged but for the import and the repository (and times
    # inside the example's history).
    script = textwrap.dedent(
        """
        from datetime import datetime, timedelta
        import pandas as pd
        from quiver import FeatureStore   # was: from feast import FeatureStore

        store = FeatureStore(repo_path=REPO)
        now = datetime.now()
        entity_df = pd.DataFrame.from_dict(
            {
                "driver_id": [1001, 1002, 1003],
                "event_timestamp": [
                    now - timedelta(hours=30),
                    now - timedelta(hours=20, minutes=12),
                    now - timedelta(hours=3, seconds=26),
                ],
            }
        )
        training_df = store.get_historical_features(
            entity_df=entity_df,
            features=[
                "driver_hourly_stats:conv_rate",
                "driver_hourly_stats:acc_rate",
                "driver_hourly_stats:avg_daily_trips",
            ],
        ).to_df()
        feature_vector = store.get_online_features(
            features=[
                "driver_hourly_stats:conv_rate",
                "driver_hourly_stats:acc_rate",
                "driver_hourly_stats:avg_daily_trips",
            ],
            entity_rows=[{"driver_id": 1004}, {"driver_id": 1005}],
        ).to_dict()
        """
    )
    scope = {"REPO": str(materialized)}
    exec(script, scope)

    pq.write_table(pa.Table.from_pandas(scope["entity_df"]), materialized / "feast_spine.parquet")
    expected = export_cli(
        materialized,
        "feast_spine.parquet",
        "--features",
        "driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate,driver_hourly_stats:avg_daily_trips",
    )
    training = scope["training_df"]
    assert training["conv_rate"].notna().any()
    pd.testing.assert_frame_equal(training, quiver._to_pandas(expected))

    wire = cli_json(
        materialized,
        "get",
        "--features",
        "driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate,driver_hourly_stats:avg_daily_trips",
        "--entity",
        "driver_id=1004",
        "--entity",
        "driver_id=1005",
    )
    names = wire["metadata"]["feature_names"]
    assert scope["feature_vector"] == {name: r["values"] for name, r in zip(names, wire["results"])}


def test_online_lookups_statuses_event_times_and_request_fields(materialized):
    store = quiver.FeatureStore(materialized)
    resp = store.get_online_features(
        features=store.get_feature_service("ride_pricing"),
        entity_rows=[
            {"driver_id": 1001, "customer_id": 10001, "fare_estimate": 42.5, "distance_km": 12.0},
            {"driver_id": 99, "customer_id": 1, "fare_estimate": 1.0, "distance_km": 1.0},
        ],
        full_feature_names=True,
    )
    wire = cli_json(
        materialized,
        "get",
        "--service",
        "ride_pricing",
        "--full-feature-names",
        "--entity",
        "driver_id=1001,customer_id=10001,fare_estimate=42.5,distance_km=12",
        "--entity",
        "driver_id=99,customer_id=1,fare_estimate=1,distance_km=1",
    )
    names = wire["metadata"]["feature_names"]
    got = resp.to_dict()
    statuses = resp.statuses()
    assert list(got) == names
    for name, result in zip(names, wire["results"]):
        assert got[name] == result["values"], name
        if name in statuses:
            assert statuses[name] == result["statuses"], name
    assert statuses["driver_hourly_stats__conv_rate"] == ["PRESENT", "NOT_FOUND"]
    with_times = resp.to_df(include_event_timestamps=True)
    assert with_times["driver_hourly_stats__conv_rate__ts"].iloc[0] > 1_700_000_000
    assert pd.isna(with_times["driver_hourly_stats__conv_rate__ts"].iloc[1])
    # Rows may come as a DataFrame too.
    rows = pd.DataFrame({"driver_id": [1001, 99]})
    frame = store.get_online_features(["driver_hourly_stats:conv_rate"], rows).to_df()
    assert frame["conv_rate"].iloc[0] == got["driver_hourly_stats__conv_rate"][0]


def test_push_reaches_online_and_offline(materialized, tmp_path):
    repo = tmp_path / "push"
    shutil.copytree(materialized, repo)
    store = quiver.FeatureStore(repo)
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=2)
    row = pd.DataFrame(
        {
            "driver_id": [1001],
            "event_timestamp": [now],
            "created": [now],
            "conv_rate": [0.123456],
            "acc_rate": [0.5],
            "avg_daily_trips": [7],
        }
    )
    pushed = store.push("driver_stats", row, to=quiver.PushMode.ONLINE_AND_OFFLINE)
    assert pushed and pushed[0]["view"] == "driver_hourly_stats"
    online = store.get_online_features(["driver_hourly_stats:conv_rate"], [{"driver_id": 1001}])
    assert online.to_dict()["conv_rate"] == [0.123456]
    # A push does not extend what is materialized; an incremental run covers up to now
    # and keeps the pushed row.
    store.materialize_incremental(None, ["driver_hourly_stats"])
    spine = pd.DataFrame({"driver_id": [1001], "event_timestamp": [now + timedelta(seconds=1)]})
    offline = store.get_historical_features(spine, ["driver_hourly_stats:conv_rate"]).to_df()
    assert offline["conv_rate"].tolist() == [0.123456]
    with pytest.raises(quiver.QuiverError, match="`to` must be"):
        store.push("driver_stats", row, to="sideways")


def test_dtypes_sql_spines_and_empty_spines(materialized):
    store = quiver.FeatureStore(materialized)
    df = store.get_historical_features(
        pq.read_table(materialized / SERVICE_SPINE), store.get_feature_service("driver_ranking")
    ).to_df()
    assert str(df["event_timestamp"].dtype).startswith("datetime64") and str(df["event_timestamp"].dt.tz) == "UTC"
    assert df["driver_id"].dtype == pd.Int64Dtype()
    assert df["lifetime_trip_count"].dtype == pd.Int64Dtype()
    assert df["trip_completed"].dtype == pd.BooleanDtype()
    assert df["conv_rate"].dtype == np.float64

    sql = "SELECT driver_id, event_timestamp + INTERVAL '1 second' AS event_timestamp FROM driver_stats WHERE driver_id = 1001"
    by_sql = store.get_historical_features(sql, ["driver_hourly_stats:conv_rate"]).to_arrow()
    assert by_sql.num_rows > 10 and by_sql.column_names == ["driver_id", "event_timestamp", "conv_rate"]

    empty = pd.DataFrame(
        {"driver_id": pd.Series([], dtype="int64"), "event_timestamp": pd.Series([], dtype="datetime64[us, UTC]")}
    )
    nothing = store.get_historical_features(empty, ["driver_hourly_stats:conv_rate"]).to_df()
    assert len(nothing) == 0 and list(nothing.columns) == ["driver_id", "event_timestamp", "conv_rate"]


def test_errors_are_exceptions_with_the_clis_text(fresh, materialized):
    store = quiver.FeatureStore(materialized)
    with pytest.raises(quiver.QuiverError, match="feature view `driver_hourly_stats` has no feature `nope`"):
        store.get_online_features(["driver_hourly_stats:nope"], [{"driver_id": 1}])
    with pytest.raises(quiver.QuiverError, match="unknown feature view `driverz`"):
        store.get_historical_features(pd.DataFrame({"driver_id": [1]}), ["driverz:conv_rate"])
    with pytest.raises(TypeError, match="entity_df must be a pandas DataFrame"):
        store.get_historical_features(42, ["driver_hourly_stats:conv_rate"])

    # Nothing materialized yet: the message names the fix.
    unmaterialized = quiver.FeatureStore(fresh)
    unmaterialized.apply()
    with pytest.raises(quiver.QuiverError, match="quiver materialize"):
        unmaterialized.get_historical_features(
            pq.read_table(fresh / SERVICE_SPINE), ["driver_hourly_stats:conv_rate"]
        )
    # A definition error keeps its file:line:col.
    (fresh / "features" / "broken.sql").write_text("CREATE FEATURE VIEW oops ENTITY nobody AS SELECT 1;\n")
    with pytest.raises(quiver.QuiverError) as error:
        unmaterialized.plan()
    assert re.search(r"features/broken\.sql:1:\d+", str(error.value)), str(error.value)
    with pytest.raises(quiver.QuiverError, match="quiver.toml"):
        quiver.FeatureStore(fresh / "nowhere")


def test_a_million_row_spine_gives_the_clis_training_set(materialized):
    rng = np.random.default_rng(7)
    n = 1_000_000
    hour = 3_600_000_000
    start = (time.time_ns() // 1000) - 6 * 24 * hour - hour
    spine = pa.table(
        {
            "driver_id": rng.integers(1001, 1101, n),
            "event_timestamp": pa.array(start + rng.integers(0, 6 * 24 * hour, n), pa.timestamp("us", "UTC")),
        }
    )
    pq.write_table(spine, materialized / "big_spine.parquet")
    store = quiver.FeatureStore(materialized)
    got = store.get_historical_features(spine, ["driver_hourly_stats:conv_rate", "driver_hourly_stats:quality"])
    expected = export_cli(
        materialized, "big_spine.parquet", "--features", "driver_hourly_stats:conv_rate,driver_hourly_stats:quality"
    )
    assert got.to_arrow().num_rows == n
    assert got.to_arrow() == expected
    assert len(got.to_df()) == n


def test_rust_work_releases_the_gil(materialized):
    store = quiver.FeatureStore(materialized)
    spine = pq.read_table(materialized / SERVICE_SPINE)
    ticks = 0
    stop = threading.Event()

    def tick():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    time.sleep(0.05)
    before = ticks
    for _ in range(3):
        store.get_historical_features(spine, store.get_feature_service("driver_ranking"))
    during = ticks - before
    stop.set()
    thread.join()
    # Were the GIL held while Rust works, the thread could tick only between the calls.
    assert during >= 20, during


def test_ctrl_c_interrupts_a_long_call(materialized):
    # A spine query that runs for minutes: a cross join of the drivers' history.
    script = textwrap.dedent(
        f"""
        import quiver, signal, sys
        # A suite started in the background (`cmd &` without job control) hands its
        # children an ignored SIGINT, and Python then installs no handler for it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        store = quiver.FeatureStore({str(materialized)!r})
        print("started", flush=True)
        try:
            store.get_historical_features(
                "SELECT a.driver_id, a.event_timestamp FROM driver_stats a, driver_stats b, driver_stats c ORDER BY 1",
                ["driver_hourly_stats:conv_rate"],
            )
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        print("finished", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 3, out
    assert "interrupted" in out


def test_the_readme_python_section_runs_as_written(materialized, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python section has a python block"
    repo = tmp_path / "readme"
    shutil.copytree(materialized, repo)
    scope: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        for block in blocks:
            exec(block, scope)
    finally:
        os.chdir(cwd)
    assert "training_df" in scope and len(scope["training_df"]) == 1000
