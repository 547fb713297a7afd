-- Sources: raw event data. Paths are relative to quiver.toml.
CREATE SOURCE driver_stats
  FROM 'data/driver_stats.parquet'        -- a file, a folder or a glob
  TIMESTAMP event_timestamp               -- event time (required)
  CREATED created                         -- ingestion time, breaks ties (optional)
  COMMENT 'Hourly statistics per driver';

CREATE SOURCE customer_stats
  FROM 'data/customer_stats.parquet'
  TIMESTAMP event_timestamp
  CREATED created
  COMMENT 'Daily account statistics per customer';

CREATE SOURCE trips
  FROM 'data/trips.parquet'
  TIMESTAMP event_timestamp
  CREATED created
  COMMENT 'Completed trips: one event per trip';
