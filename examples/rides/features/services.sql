-- Feature services: the features one model reads, by name.
CREATE FEATURE SERVICE driver_ranking (
  driver_hourly_stats.conv_rate,
  driver_hourly_stats.quality,
  customer_profile.*,
  customer_trips.trips_1d,                -- features of an aggregation view
  customer_trips.fare_avg_7d
) COMMENT 'Features of the driver ranking model';

CREATE FEATURE SERVICE ride_pricing (
  trip_quote.*,                           -- an on-demand view: lookups send its request fields
  customer_trips.fare_avg_7d,
  driver_hourly_stats.conv_rate
) COMMENT 'Features of the fare model: the requested trip against the history';
