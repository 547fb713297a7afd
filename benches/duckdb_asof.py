"""DuckDB's ASOF JOIN on the same offline tables and spine as `benches/offline.rs`,
with the same semantics (latest event <= t, ties on event time to the greatest
`created`, TTL lower bound inclusive), as the external reference for the export time.

    python3 benches/duckdb_asof.py target/bench-data/large [runs]

Prints the best and median wall time and the same fingerprints as the Rust harness.
"""
import statistics
import sys
import time

import duckdb

root = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
offline = f"{root}/data/offline"

QUERY = f"""
WITH s AS (SELECT *, row_number() OVER () AS row_id FROM read_parquet('{root}/data/spine.parquet')),
d AS (SELECT * FROM read_parquet('{offline}/driver_hourly_stats/v1/*/*.parquet')
      QUALIFY row_number() OVER (PARTITION BY driver_id, event_timestamp ORDER BY created DESC) = 1),
c AS (SELECT * FROM read_parquet('{offline}/customer_profile/v1/*/*.parquet')
      QUALIFY row_number() OVER (PARTITION BY customer_id, event_timestamp ORDER BY created DESC) = 1),
sd AS (SELECT s.row_id,
              CASE WHEN d.event_timestamp >= s.event_timestamp - INTERVAL 1 DAY THEN d.conv_rate END AS conv_rate,
              CASE WHEN d.event_timestamp >= s.event_timestamp - INTERVAL 1 DAY THEN d.acc_rate END AS acc_rate,
              CASE WHEN d.event_timestamp >= s.event_timestamp - INTERVAL 1 DAY THEN d.avg_daily_trips END AS avg_daily_trips,
              CASE WHEN d.event_timestamp >= s.event_timestamp - INTERVAL 1 DAY THEN d.quality END AS quality
       FROM s ASOF LEFT JOIN d ON s.driver_id = d.driver_id AND s.event_timestamp >= d.event_timestamp),
sc AS (SELECT s.row_id,
              CASE WHEN c.event_timestamp >= s.event_timestamp - INTERVAL 7 DAY THEN c.current_balance END AS current_balance,
              CASE WHEN c.event_timestamp >= s.event_timestamp - INTERVAL 7 DAY THEN c.avg_passenger_count END AS avg_passenger_count,
              CASE WHEN c.event_timestamp >= s.event_timestamp - INTERVAL 7 DAY THEN c.lifetime_trip_count END AS lifetime_trip_count
       FROM s ASOF LEFT JOIN c ON s.customer_id = c.customer_id AND s.event_timestamp >= c.event_timestamp)
SELECT s.driver_id, s.customer_id, s.event_timestamp, s.trip_completed,
       sd.conv_rate, sd.acc_rate, sd.avg_daily_trips, sd.quality,
       sc.current_balance, sc.avg_passenger_count, sc.lifetime_trip_count
FROM s JOIN sd USING (row_id) JOIN sc USING (row_id)
ORDER BY s.row_id
"""

con = duckdb.connect()
times = []
for _ in range(runs):
    started = time.perf_counter()
    # The result stays in DuckDB (as Quiver's stays in Arrow): no transfer to Python.
    con.execute(f"CREATE OR REPLACE TEMP TABLE training AS {QUERY}")
    times.append(time.perf_counter() - started)
best, median = min(times), statistics.median(times)
rows = con.execute("SELECT count(*) FROM training").fetchone()[0]
print(f"export (DuckDB {duckdb.__version__} ASOF JOIN): {rows} rows, best {best:.2f} s, median {median:.2f} s over {runs} runs")
for column in ["conv_rate", "current_balance"]:
    count, total = con.execute(f"SELECT count({column}), sum({column}) FROM training").fetchone()
    print(f"  {column}: {count} non-null, sum {total:.4f}")
