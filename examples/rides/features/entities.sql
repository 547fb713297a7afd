-- Entities: what features are about. Each names its key columns and their types.
CREATE ENTITY driver (driver_id BIGINT) COMMENT 'A ride-hailing driver';

CREATE ENTITY customer (customer_id BIGINT) COMMENT 'A rider who books trips';
