"""Feast definitions, the twin of quiver_definitions.sql (Quiver's side).

Used by tests/feast/test_feast_sdk.py: the Feast SDK and CLI run against this repository
with `online_store: {type: remote}` pointing at `quiver serve`, so every online read,
write and materialization goes to Quiver. Names and types must match Quiver's:

    CREATE ENTITY driver (driver_id BIGINT);  CREATE ENTITY customer (customer_id BIGINT);
    driver_hourly_stats: conv_rate, acc_rate DOUBLE, avg_daily_trips BIGINT, quality DOUBLE; TTL 1 day
    customer_profile: current_balance, avg_passenger_count DOUBLE, lifetime_trip_count BIGINT; TTL 7 days
    driver_ranking: driver_hourly_stats.conv_rate, driver_hourly_stats.quality, customer_profile.*
    ride_request (request source): fare_estimate, distance_km DOUBLE
    trip_quote (on demand, over ride_request, customer_profile, driver_hourly_stats):
        fare_per_km, fare_vs_balance, accept_no_convert DOUBLE, trips_with_this BIGINT, long_trip BOOLEAN
    ride_pricing: trip_quote.*, customer_profile.current_balance, driver_hourly_stats.conv_rate

The file sources only serve Feast's own offline side (a push with to=offline writes there);
`data/*.parquet` is written by the test fixture from Quiver's generated data.

trip_quote's Python function is Feast's definition of the on-demand view; with the remote
online store the SDK never runs it for lookups: it sends the request fields beside the
keys and Quiver evaluates its own SQL (quiver_definitions.sql). The function computes the
same values (NULLIF's NULL is None here) so that Feast's offline side agrees.
"""

from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float64, Int64
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

# Request data: sent with each lookup beside the entity keys.
ride_request = RequestSource(
    name="ride_request",
    schema=[
        Field(name="fare_estimate", dtype=Float64),
        Field(name="distance_km", dtype=Float64),
    ],
)


@on_demand_feature_view(
    sources=[ride_request, customer_profile, driver_hourly_stats],
    schema=[
        Field(name="fare_per_km", dtype=Float64),
        Field(name="fare_vs_balance", dtype=Float64),
        Field(name="accept_no_convert", dtype=Float64),
        Field(name="trips_with_this", dtype=Int64),
        Field(name="long_trip", dtype=Bool),
    ],
    mode="python",
)
def trip_quote(inputs: dict[str, Any]) -> dict[str, Any]:
    # Self-contained: Feast stores the function's source in the registry, not its module.
    def ratio(numerator, denominator):  # numerator / NULLIF(denominator, 0)
        if numerator is None or denominator is None or denominator == 0:
            return None
        return numerator / denominator

    out: dict[str, list] = {
        "fare_per_km": [], "fare_vs_balance": [], "accept_no_convert": [], "trips_with_this": [], "long_trip": []
    }
    for fare, km, balance, trips, conv, acc in zip(
        inputs["fare_estimate"],
        inputs["distance_km"],
        inputs["current_balance"],
        inputs["lifetime_trip_count"],
        inputs["conv_rate"],
        inputs["acc_rate"],
    ):
        out["fare_per_km"].append(ratio(fare, km))
        out["fare_vs_balance"].append(ratio(fare, balance))
        out["accept_no_convert"].append(None if conv is None or acc is None else acc * (1 - conv))
        out["trips_with_this"].append(None if trips is None else trips + 1)
        out["long_trip"].append(None if km is None else km > 10)
    return out


ride_pricing = FeatureService(
    name="ride_pricing",
    features=[trip_quote, customer_profile[["current_balance"]], driver_hourly_stats[["conv_rate"]]],
)
