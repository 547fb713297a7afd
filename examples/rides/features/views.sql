-- Feature views: SQL over sources. Every output column that is not a key or a
-- timestamp is a feature.
CREATE FEATURE VIEW driver_hourly_stats
  ENTITY driver
  TTL '1 day'                             -- a value older than this is not served
  TAGS (team = 'rides', owner = 'ml@example.com')
  COMMENT 'Conversion and acceptance rates of each driver'
AS SELECT driver_id, event_timestamp, created,
          conv_rate, acc_rate, avg_daily_trips,
          conv_rate * acc_rate AS quality
   FROM driver_stats
   WHERE conv_rate IS NOT NULL;

CREATE FEATURE VIEW customer_profile
  ENTITY customer
  TTL '7 days'
  OWNER 'growth@example.com'
AS SELECT customer_id, event_timestamp, created,
          current_balance, avg_passenger_count, lifetime_trip_count
   FROM customer_stats;

-- An aggregation view: each customer's trips over sliding windows, one feature per
-- aggregate and window (trips_1h, fare_avg_7d, …), fresh online as trips are pushed.
CREATE FEATURE VIEW customer_trips
  ENTITY customer
  WINDOWS ('1 hour', '1 day', '7 days')
  COMMENT 'Trips and fares of each customer over the last hour, day and week'
AS SELECT customer_id,
          COUNT(*) AS trips,
          SUM(fare) AS fare_sum,
          AVG(fare) AS fare_avg,
          MAX(distance_km) AS longest_km,
          STDDEV(fare) AS fare_std
   FROM trips
   GROUP BY customer_id;

-- An on-demand view: computed for each request from its fields and the features of
-- other views, by the same compiled expressions in lookups and in exports.
CREATE FEATURE VIEW trip_quote ON DEMAND
  COMMENT 'The requested trip against the customer''s history and the driver'
AS SELECT ride_request.fare_estimate / NULLIF(customer_trips.fare_avg_7d, 0) AS fare_vs_avg_7d,
          ride_request.distance_km > COALESCE(customer_trips.longest_km_7d, 0) AS longest_yet,
          ride_request.fare_estimate / NULLIF(ride_request.distance_km, 0) AS fare_per_km,
          driver_hourly_stats.acc_rate * (1 - driver_hourly_stats.conv_rate) AS accept_no_convert,
          customer_trips.trips_1d + 1 AS trips_today_with_this
   FROM ride_request, customer_trips, driver_hourly_stats;
