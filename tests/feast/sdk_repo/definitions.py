"""Feast definitions, the twin of quiver_definitions.sql (Quiver's side).

Used by tests/feast/test_feast_sdk.py: the Feast SDK and CLI run against this repository
with `online_store: {type: remote}` pointing at `quiver serve`, so every online read,
write and materialization goes to Quiver. Names and types must match Quiver's:

    CREATE ENTITY driver (driver_id BIGINT);  CREATE ENTITY customer (customer_id BIGINT);
    driver_hourly_stats: conv_rate, acc_rate DOUBLE, avg_daily_trips BIGINT, quality DOUBLE; TTL 1 day
    customer_profile: current_balance, avg_passenger_count DOUBLE, lifetime_trip_count BIGINT; TTL 7 days
    driver_ranking: driver_hourly_stats.conv_rate, driver_hourly_stats.quality, customer_profile.*

The file sources only serve Feast's own offline side (a push with to=offline writes there);
`data/*.parquet` is written by the test fixture from Quiver's generated data.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)

driver_stats = FileSource(
    name="driver_stats",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# Feast pushes go through a PushSource; Quiver has no push sources, so the SDK's push is
# sent as /write-to-online-store for the view that reads this source.
driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats)

customer_stats = FileSource(
    name="customer_stats",
    path="data/customer_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float64),
        Field(name="acc_rate", dtype=Float64),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="quality", dtype=Float64),
    ],
    source=driver_stats_push,
    online=True,
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=7),
    schema=[
        Field(name="current_balance", dtype=Float64),
        Field(name="avg_passenger_count", dtype=Float64),
        Field(name="lifetime_trip_count", dtype=Int64),
    ],
    source=customer_stats,
    online=True,
)

driver_ranking = FeatureService(
    name="driver_ranking",
    features=[driver_hourly_stats[["conv_rate", "quality"]], customer_profile],
)
