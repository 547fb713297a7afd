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
