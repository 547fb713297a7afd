//! The example feature repository (`examples/rides`) and its seeded data generator.
//!
//! `quiver init DIR` writes the example's definitions and a small generated dataset;
//! benchmarks call [`ExampleData`] with larger scales. The same seed and end time always
//! give the same rows, byte for byte.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// The example's files, relative to the repository root.
pub const FILES: [(&str, &str); 5] = [
    (
        "quiver.toml",
        include_str!("../../../examples/rides/quiver.toml"),
    ),
    (
        "features/entities.sql",
        include_str!("../../../examples/rides/features/entities.sql"),
    ),
    (
        "features/sources.sql",
        include_str!("../../../examples/rides/features/sources.sql"),
    ),
    (
        "features/views.sql",
        include_str!("../../../examples/rides/features/views.sql"),
    ),
    (
        "features/services.sql",
        include_str!("../../../examples/rides/features/services.sql"),
    ),
];

/// Writes the example repository into `dir` (created when missing) with a small dataset
/// whose history ends at `now` (rounded down to the hour).
pub fn init_repository(dir: &Path, now: DateTime<Utc>) -> Result<()> {
    if dir.join("quiver.toml").exists() {
        return Err(Error::RepositoryExists {
            path: dir.to_path_buf(),
        });
    }
    for (name, text) in FILES {
        let path = dir.join(name);
        write_file(&path, text.as_bytes())?;
    }
    write_file(&dir.join(".gitignore"), b"/.quiver/\n/data/offline/\n")?;
    let end = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    ExampleData::small(end).write(&dir.join("data"))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |e: std::io::Error| Error::WriteFailed {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, bytes).map_err(failed)
}

/// The shape of a generated driver/customer dataset.
#[derive(Debug, Clone)]
pub struct ExampleData {
    pub drivers: u64,
    pub events_per_driver: u64,
    pub customers: u64,
    pub events_per_customer: u64,
    /// Trips per customer (`trips.parquet`, the event stream of the aggregation view).
    pub trips_per_customer: u64,
    /// The history spans this many days and ends at `end`.
    pub days: u64,
    pub end: DateTime<Utc>,
    /// Rows of the generated spine (`spine.parquet`): random (driver, customer, time)
    /// triples over the history, with a label.
    pub spine_rows: u64,
    /// One row in this many repeats the previous row's (key, event time) with a later
    /// `created` and other values (0: none).
    pub duplicate_every: u64,
    pub seed: u64,
}

impl ExampleData {
    /// What `quiver init` writes: 100 drivers with hourly events over a day, 50 customers.
    pub fn small(end: DateTime<Utc>) -> Self {
        ExampleData {
            drivers: 100,
            events_per_driver: 24,
            customers: 50,
            events_per_customer: 7,
            trips_per_customer: 20,
            days: 1,
            end,
            duplicate_every: 100,
            spine_rows: 1_000,
            seed: 42,
        }
    }

    /// The benchmark scales: `small` (init), `medium` and `large` (10 M driver rows, 2 M
    /// customer rows, 10 M trips of 200 000 customers, a 1 M-row spine over 30 days).
    pub fn scale(name: &str, end: DateTime<Utc>) -> Option<Self> {
        let (drivers, customers, spine_rows) = match name {
            "small" => return Some(ExampleData::small(end)),
            "medium" => (10_000, 20_000, 100_000),
            "large" => (100_000, 200_000, 1_000_000),
            _ => return None,
        };
        Some(ExampleData {
            drivers,
            events_per_driver: 100,
            customers,
            events_per_customer: 10,
            trips_per_customer: 50,
            days: 30,
            end,
            duplicate_every: 100,
            spine_rows,
            seed: 42,
        })
    }

    /// Writes `driver_stats.parquet`, `customer_stats.parquet`, `trips.parquet` and
    /// `spine.parquet` into `dir`; returns the paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let driver_path = dir.join("driver_stats.parquet");
        let customer_path = dir.join("customer_stats.parquet");
        let trips_path = dir.join("trips.parquet");
        let spine_path = dir.join("spine.parquet");
        self.write_table(&driver_path, Table::Driver)?;
        self.write_table(&customer_path, Table::Customer)?;
        self.write_table(&trips_path, Table::Trips)?;
        self.write_spine(&spine_path)?;
        Ok(vec![driver_path, customer_path, trips_path, spine_path])
    }

    fn write_spine(&self, path: &Path) -> Result<()> {
        let failed = |message: String| Error::WriteFailed {
            path: path.to_path_buf(),
            message,
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("customer_id", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("trip_completed", DataType::Boolean, false),
            // The request fields of `trip_quote` (the on-demand view): what the app
            // knew when it asked.
            Field::new("fare_estimate", DataType::Float64, false),
            Field::new("distance_km", DataType::Float64, false),
        ]));
        let file = File::create(path).map_err(|e| failed(e.to_string()))?;
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None)
            .map_err(|e| failed(e.to_string()))?;
        let mut rng = SplitMix64(self.seed ^ 0x5151);
        // A stream of its own, so the other columns stay what they were.
        let mut quotes = SplitMix64(self.seed ^ 0x9e37);
        let span_us = (self.days as i64) * 86_400_000_000;
        let start_us = self.end.timestamp_micros() - span_us;
        let mut written = 0;
        while written < self.spine_rows {
            let n = (self.spine_rows - written).min(65_536);
            let mut drivers = Int64Builder::new();
            let mut customers = Int64Builder::new();
            let mut times = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            let mut labels = BooleanBuilder::new();
            let mut fares = Float64Builder::new();
            let mut distances = Float64Builder::new();
            for _ in 0..n {
                drivers.append_value(1001 + (rng.next() % self.drivers.max(1)) as i64);
                customers.append_value(10_001 + (rng.next() % self.customers.max(1)) as i64);
                times.append_value(start_us + (rng.next() % span_us as u64) as i64);
                labels.append_value(rng.next().is_multiple_of(2));
                fares.append_value(5.0 + (quotes.next() % 6_000) as f64 / 100.0);
                distances.append_value(0.5 + (quotes.next() % 3_000) as f64 / 100.0);
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(drivers.finish()),
                Arc::new(customers.finish()),
                Arc::new(times.finish()),
                Arc::new(labels.finish()),
                Arc::new(fares.finish()),
                Arc::new(distances.finish()),
            ];
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
                .expect("builders match the spine schema");
            writer.write(&batch).map_err(|e| failed(e.to_string()))?;
            written += n;
        }
        writer.close().map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    fn write_table(&self, path: &Path, table: Table) -> Result<()> {
        let failed = |message: String| Error::WriteFailed {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
        }
        let schema = table.schema();
        let file = File::create(path).map_err(|e| failed(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .map_err(|e| failed(e.to_string()))?;
        let (entities, events, first_id, seed) = match table {
            Table::Driver => (self.drivers, self.events_per_driver, 1001, self.seed),
            Table::Customer => (
                self.customers,
                self.events_per_customer,
                10_001,
                self.seed ^ 0x9E37_79B9_7F4A_7C15,
            ),
            Table::Trips => (
                self.customers,
                self.trips_per_customer,
                10_001,
                self.seed ^ 0x7F4A_7C15,
            ),
        };
        let mut rng = SplitMix64(seed);
        let span_us = (self.days as i64) * 86_400_000_000;
        let start_us = self.end.timestamp_micros() - span_us;
        let step_us = span_us / events.max(1) as i64;
        let mut batch = BatchBuilder::new(table);
        for entity in 0..entities {
            let id = first_id + entity as i64;
            for event in 0..events {
                // Spread events evenly over the span, jittered within their slot; the last
                // event lands at most one slot before `end`.
                let jitter = (rng.next() % step_us.max(1) as u64) as i64;
                let ts = start_us + (event as i64 + 1) * step_us - jitter;
                let created = ts + (rng.next() % 120_000_000) as i64;
                batch.push(id, ts, created, &mut rng);
                let repeat = !matches!(table, Table::Trips) && self.duplicate_every > 0;
                if repeat && rng.next().is_multiple_of(self.duplicate_every) {
                    batch.push(id, ts, created + 1_000_000, &mut rng);
                }
                if batch.len() >= 65_536 {
                    writer
                        .write(&batch.finish(&schema))
                        .map_err(|e| failed(e.to_string()))?;
                }
            }
        }
        if batch.len() > 0 {
            writer
                .write(&batch.finish(&schema))
                .map_err(|e| failed(e.to_string()))?;
        }
        writer.close().map_err(|e| failed(e.to_string()))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Table {
    Driver,
    Customer,
    /// Trips of customers: every row an event (fare, distance, the driver).
    Trips,
}

impl Table {
    fn schema(self) -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let (key, features): (&str, [(&str, DataType); 3]) = match self {
            Table::Driver => (
                "driver_id",
                [
                    ("conv_rate", DataType::Float64),
                    ("acc_rate", DataType::Float64),
                    ("avg_daily_trips", DataType::Int64),
                ],
            ),
            Table::Customer => (
                "customer_id",
                [
                    ("current_balance", DataType::Float64),
                    ("avg_passenger_count", DataType::Float64),
                    ("lifetime_trip_count", DataType::Int64),
                ],
            ),
            Table::Trips => (
                "customer_id",
                [
                    ("fare", DataType::Float64),
                    ("distance_km", DataType::Float64),
                    ("driver_id", DataType::Int64),
                ],
            ),
        };
        let mut fields = vec![
            Field::new(key, DataType::Int64, false),
            Field::new("event_timestamp", ts.clone(), false),
            Field::new("created", ts, false),
        ];
        fields.extend(
            features
                .into_iter()
                .map(|(name, t)| Field::new(name, t, true)),
        );
        Arc::new(Schema::new(fields))
    }
}

struct BatchBuilder {
    table: Table,
    ids: Int64Builder,
    ts: TimestampMicrosecondBuilder,
    created: TimestampMicrosecondBuilder,
    a: Float64Builder,
    b: Float64Builder,
    c: Int64Builder,
}

impl BatchBuilder {
    fn new(table: Table) -> Self {
        BatchBuilder {
            table,
            ids: Int64Builder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            created: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            a: Float64Builder::new(),
            b: Float64Builder::new(),
            c: Int64Builder::new(),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, id: i64, ts: i64, created: i64, rng: &mut SplitMix64) {
        self.ids.append_value(id);
        self.ts.append_value(ts);
        self.created.append_value(created);
        match self.table {
            Table::Driver => {
                // About 2% of conversion rates are missing.
                if rng.next().is_multiple_of(50) {
                    self.a.append_null();
                } else {
                    self.a.append_value(rng.unit());
                }
                self.b.append_value(rng.unit());
                self.c.append_value((rng.next() % 1_000) as i64);
            }
            Table::Customer => {
                self.a.append_value((rng.next() % 1_000_000) as f64 / 100.0);
                self.b.append_value(1.0 + rng.unit() * 3.0);
                self.c.append_value((rng.next() % 5_000) as i64);
            }
            Table::Trips => {
                self.a
                    .append_value(3.0 + (rng.next() % 6_000) as f64 / 100.0);
                self.b.append_value(0.5 + rng.unit() * 30.0);
                self.c.append_value(1001 + (rng.next() % 100) as i64);
            }
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ids.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.created.finish()),
            Arc::new(self.a.finish()),
            Arc::new(self.b.finish()),
            Arc::new(self.c.finish()),
        ];
        RecordBatch::try_new(Arc::clone(schema), columns).expect("builders match the table schema")
    }
}

/// A tiny, fast, seeded generator (SplitMix64): reproducible data without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1) with 4 decimals.
    fn unit(&mut self) -> f64 {
        (self.next() % 10_000) as f64 / 10_000.0
    }
}
