"""DuckDB's ASOF JOIN on Quiver's offline tables and spine, with the export's semantics
(latest event <= t, ties on event time to the greatest `created`, TTL lower bound
inclusive): the external reference for the export time.

    python3 benches/duckdb_asof.py ROOT [RUNS] [--out FILE] [--compare FILE] [--json]

ROOT holds `data/spine.parquet` and the offline root `data/offline` (a repository made
by a harness, or `target/bench-data/<scale>` of `benches/offline.rs`). Without `--out`
the result stays in DuckDB (as the in-process harness keeps Quiver's in Arrow); with
`--out` it is written to Parquet (Snappy), as `quiver export --out` does, and the time
includes the write. `--compare` checks every feature value of Quiver's export (same spine
order) against DuckDB's. Prints the best and median wall time and fingerprints; `--json`
prints one JSON object instead.
"""
import argparse
import json
import resource
import statistics
import sys
import time

import duckdb

ROW_VIEWS = {
    # view: (key, TTL, features)
    "driver_hourly_stats": ("driver_id", "1 DAY", ["conv_rate", "acc_rate", "avg_daily_trips", "quality"]),
    "customer_profile": ("customer_id", "7 DAY", ["current_balance", "avg_passenger_count", "lifetime_trip_count"]),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("runs", nargs="?", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--compare")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    offline = f"{args.root}/data/offline"
    spine = f"{args.root}/data/spine.parquet"

    con = duckdb.connect()
    # Quiver's materialization keeps one row per (key, event time); when the files hold
    # duplicates (another writer), DuckDB must pick the greatest `created` itself. The
    # cheapest correct query is the one timed.
    sources = {}
    deduplicated = {}
    for view, (key, _, _) in ROW_VIEWS.items():
        files = f"read_parquet('{offline}/{view}/v1/*/*.parquet')"
        duplicates = con.execute(
            f"SELECT count(*) - count(DISTINCT ({key}, event_timestamp)) FROM {files}"
        ).fetchone()[0]
        deduplicated[view] = duplicates > 0
        sources[view] = (
            f"(SELECT * FROM {files} QUALIFY row_number() OVER "
            f"(PARTITION BY {key}, event_timestamp ORDER BY created DESC) = 1)"
            if duplicates
            else files
        )

    joins, selected = [], []
    for alias, (view, (key, ttl, features)) in zip("dc", ROW_VIEWS.items()):
        picks = ",\n              ".join(
            f"CASE WHEN {alias}.event_timestamp >= s.event_timestamp - INTERVAL {ttl} THEN {alias}.{f} END AS {f}"
            for f in features
        )
        joins.append(
            f"""s{alias} AS (SELECT s.row_id,
              {picks}
       FROM s ASOF LEFT JOIN {sources[view]} {alias}
         ON s.{key} = {alias}.{key} AND s.event_timestamp >= {alias}.event_timestamp)"""
        )
        selected += [f"s{alias}.{f}" for f in features]
    query = f"""
WITH s AS (SELECT *, row_number() OVER () AS row_id FROM read_parquet('{spine}')),
{(',' + chr(10)).join(joins)}
SELECT s.* EXCLUDE (row_id), {', '.join(selected)}
FROM s JOIN sd USING (row_id) JOIN sc USING (row_id)
ORDER BY s.row_id
"""

    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        if args.out:
            con.execute(f"COPY ({query}) TO '{args.out}' (FORMAT parquet, COMPRESSION snappy)")
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE training AS {query}")
        times.append(time.perf_counter() - started)
    result = f"read_parquet('{args.out}')" if args.out else "training"
    best, median = min(times), statistics.median(times)
    rows = con.execute(f"SELECT count(*) FROM {result}").fetchone()[0]
    fingerprint = {}
    for column in ["conv_rate", "current_balance"]:
        count, total = con.execute(f"SELECT count({column}), sum({column}) FROM {result}").fetchone()
        fingerprint[column] = {"non_null": count, "sum": round(total or 0.0, 4)}

    mismatches = None
    if args.compare:
        features = [f for _, _, fs in ROW_VIEWS.values() for f in fs]
        differs = " + ".join(f"(q.{f} IS DISTINCT FROM d.{f})::INT" for f in features)
        compared, mismatches = con.execute(
            f"""SELECT count(*), sum({differs})
                FROM read_parquet('{args.compare}', file_row_number = true) q
                FULL JOIN (SELECT *, row_number() OVER () - 1 AS file_row_number FROM {result}) d
                USING (file_row_number)"""
        ).fetchone()
        mismatches = int(mismatches or 0)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "engine": f"DuckDB {duckdb.__version__} ASOF JOIN",
        "rows": rows,
        "best": best,
        "median": median,
        "runs": args.runs,
        "written_to_parquet": bool(args.out),
        "deduplicated_in_query": deduplicated,
        "fingerprint": fingerprint,
        "mismatches": mismatches,
        "peak_rss_mib": peak_mib,
    }
    if args.json:
        print(json.dumps(report))
        return
    where = "written to Parquet" if args.out else "kept in DuckDB"
    print(f"export ({report['engine']}, {where}): {rows} rows, best {best:.2f} s, median {median:.2f} s over {args.runs} runs")
    for column, values in fingerprint.items():
        print(f"  {column}: {values['non_null']} non-null, sum {values['sum']:.4f}")
    if mismatches is not None:
        print(f"  compared with {args.compare}: {mismatches} differing values")


if __name__ == "__main__":
    sys.exit(main())
