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

-- A request source: fields that arrive with each lookup (beside the entity keys) and,
-- in training sets, as spine columns of the same names.
CREATE REQUEST SOURCE ride_request (fare_estimate DOUBLE, distance_km DOUBLE)
  COMMENT 'What the app knows when it asks for a driver';
