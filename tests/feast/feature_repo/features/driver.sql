-- Feast's template repository: one entity, one push source, one view, one service.
CREATE ENTITY driver (driver_id BIGINT) COMMENT 'Driver id';

CREATE SOURCE driver_stats_push_source
  FROM 'data/driver_stats.jsonl'
  TIMESTAMP event_timestamp
  CREATED created;

CREATE FEATURE VIEW driver_hourly_stats
  ENTITY driver
  TTL '1 day'
AS SELECT driver_id, event_timestamp, created, conv_rate, acc_rate, avg_daily_trips
   FROM driver_stats_push_source;

CREATE FEATURE SERVICE driver_activity (driver_hourly_stats.*);
