"""DuckDB's side of `benches/windows.rs`: the example's `customer_trips` view (windows 1 h,
1 d and 7 d; COUNT, SUM, AVG, MAX, STDDEV) for every spine row, computed the
straightforward way — a range join of the spine onto the trips and a GROUP BY per spine
row — with Quiver's semantics (`floor_hop(T - w) <= event time < T`; default hops 5 min
for 1 h, 1 h for 1 d and 7 d; COUNT 0 and NULLs for empty windows), written to Parquet as
Quiver's export is. Then it compares every value with Quiver's output.

    python3 benches/duckdb_windows.py DATA_DIR QUIVER_OUTPUT OUT_DIR [runs]

Prints one JSON line: {"best", "median", "rows", "peak_rss_mib", "mismatches", ...}.
"""
import json
import resource
import statistics
import sys
import time

import duckdb

data, quiver_output, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
output = f"{out_dir}/duckdb_windows.parquet"

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# (label, window, hop) in µs: the view's windows and their default hops.
WINDOWS = [("1h", HOUR, 5 * MINUTE), ("1d", DAY, HOUR), ("7d", 7 * DAY, HOUR)]
LONGEST = max(w for _, w, _ in WINDOWS)
LONGEST_HOP = next(h for _, w, h in WINDOWS if w == LONGEST)

starts = ",\n       ".join(
    f"(t - {w}) // {h} * {h} AS start_{label}" for label, w, h in WINDOWS
)
aggregates = []
for label, _, _ in WINDOWS:
    f = f"FILTER (WHERE e >= start_{label})"
    aggregates += [
        f"count(*) {f} AS trips_{label}",
        f"sum(fare) {f} AS fare_sum_{label}",
        f"avg(fare) {f} AS fare_avg_{label}",
        f"max(distance_km) {f} AS longest_km_{label}",
        f"stddev_samp(fare) {f} AS fare_std_{label}",
    ]
aggregates = ",\n       ".join(aggregates)
FEATURES = [
    f"{name}_{label}"
    for label, _, _ in WINDOWS
    for name in ["trips", "fare_sum", "fare_avg", "longest_km", "fare_std"]
]
outputs = ",\n       ".join(
    f"coalesce(a.{c}, 0) AS {c}" if c.startswith("trips_") else f"a.{c}" for c in FEATURES
)

QUERY = f"""
WITH spine AS (
  SELECT row_number() OVER () AS row_id, *, epoch_us(event_timestamp) AS t
  FROM read_parquet('{data}/spine.parquet')),
bounds AS (
  SELECT row_id, customer_id, t,
       {starts}
  FROM spine),
trips AS (
  SELECT customer_id, epoch_us(event_timestamp) AS e, fare, distance_km
  FROM read_parquet('{data}/trips.parquet')),
joined AS (
  SELECT b.*, trips.e, trips.fare, trips.distance_km
  FROM bounds b JOIN trips
    ON trips.customer_id = b.customer_id AND trips.e >= b.start_7d AND trips.e < b.t),
a AS (
  SELECT row_id,
       {aggregates}
  FROM joined GROUP BY row_id)
SELECT s.driver_id, s.customer_id, s.event_timestamp, s.trip_completed,
       {outputs}
FROM spine s LEFT JOIN a USING (row_id)
ORDER BY s.row_id
"""

con = duckdb.connect()
times = []
for _ in range(runs):
    started = time.perf_counter()
    con.execute(f"COPY ({QUERY}) TO '{output}' (FORMAT parquet)")
    times.append(time.perf_counter() - started)
peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# Every value of every feature, row by row (both files are in the spine's order).
checks = []
for c in FEATURES:
    checks.append(
        f"""sum(CASE WHEN q.{c} IS NULL AND d.{c} IS NULL THEN 0
                  WHEN q.{c} IS NULL OR d.{c} IS NULL THEN 1
                  WHEN q.{c} = d.{c} THEN 0
                  WHEN abs(q.{c} - d.{c}) <= 1e-9 * greatest(abs(q.{c}), abs(d.{c})) THEN 0
                  ELSE 1 END) AS {c}"""
    )
compare = f"""
SELECT count(*) AS rows,
       sum(CASE WHEN q.customer_id = d.customer_id AND q.event_timestamp = d.event_timestamp THEN 0 ELSE 1 END) AS spine,
       {", ".join(checks)}
FROM read_parquet('{quiver_output}') q POSITIONAL JOIN read_parquet('{output}') d
"""
row = con.execute(compare).fetchone()
names = ["rows", "spine"] + FEATURES
counts = dict(zip(names, row))
fingerprint = con.execute(
    f"SELECT sum(trips_7d), count(fare_std_7d), sum(fare_sum_7d) FROM read_parquet('{output}')"
).fetchone()
print(
    json.dumps(
        {
            "engine": f"DuckDB {duckdb.__version__}",
            "best": min(times),
            "median": statistics.median(times),
            "runs": runs,
            "rows": con.execute(f"SELECT count(*) FROM read_parquet('{output}')").fetchone()[0],
            "peak_rss_mib": peak_rss_mib,
            "compared_rows": counts["rows"],
            "mismatches": {k: v for k, v in counts.items() if k != "rows" and v},
            "fingerprint": {"sum_trips_7d": fingerprint[0], "nonnull_fare_std_7d": fingerprint[1], "sum_fare_sum_7d": fingerprint[2]},
        }
    )
)
