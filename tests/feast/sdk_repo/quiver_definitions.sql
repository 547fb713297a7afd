-- Quiver's side of definitions.py (Feast's side): the same entities, views and services,
-- so that Feast's SDK and Quiver agree on every name and type. The test fixture writes
-- this file as the whole of a Quiver repository's definitions, over the data that
-- `quiver init` generates (data/driver_stats.parquet, data/customer_stats.parquet), so
-- the suite does not change when Quiver's example repository grows.
CREATE ENTITY driver (driver_id BIGINT);

CREATE ENTITY customer (customer_id BIGINT);

CREATE SOURCE driver_stats
  FROM 'data/driver_stats.parquet'
  TIMESTAMP event_timestamp
  CREATED created;

CREATE SOURCE customer_stats
  FROM 'data/customer_stats.parquet'
  TIMESTAMP event_timestamp
  CREATED created;

CREATE FEATURE VIEW driver_hourly_stats
  ENTITY driver
  TTL '1 day'
AS SELECT driver_id, event_timestamp, created,
          conv_rate, acc_rate, avg_daily_trips,
          conv_rate * acc_rate AS quality
   FROM driver_stats
   WHERE conv_rate IS NOT NULL;

CREATE FEATURE VIEW customer_profile
  ENTITY customer
  TTL '7 days'
AS SELECT customer_id, event_timestamp, created,
          current_balance, avg_passenger_count, lifetime_trip_count
   FROM customer_stats;

CREATE FEATURE SERVICE driver_ranking (
  driver_hourly_stats.conv_rate,
  driver_hourly_stats.quality,
  customer_profile.*
);

-- Request data (definitions.py: RequestSource ride_request): sent with each lookup
-- beside the entity keys.
CREATE REQUEST SOURCE ride_request (fare_estimate DOUBLE, distance_km DOUBLE);

-- definitions.py: @on_demand_feature_view trip_quote (mode="python"), the same outputs
-- and types. NULLIF guards the divisions (NULL, not an error or infinity, for 0).
CREATE FEATURE VIEW trip_quote ON DEMAND
AS SELECT ride_request.fare_estimate / NULLIF(ride_request.distance_km, 0) AS fare_per_km,
          ride_request.fare_estimate / NULLIF(customer_profile.current_balance, 0) AS fare_vs_balance,
          driver_hourly_stats.acc_rate * (1 - driver_hourly_stats.conv_rate) AS accept_no_convert,
          customer_profile.lifetime_trip_count + 1 AS trips_with_this,
          ride_request.distance_km > 10 AS long_trip
   FROM ride_request, customer_profile, driver_hourly_stats;

CREATE FEATURE SERVICE ride_pricing (
  trip_quote.*,
  customer_profile.current_balance,
  driver_hourly_stats.conv_rate
);
