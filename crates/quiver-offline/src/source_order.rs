//! Numbering a view's rows in source order, on every core when the query allows it.
//!
//! A materialization keeps, of rows equal on (keys, event time, created), the last in
//! source order, and an aggregation view stores each event's source order; both come from
//! [`SEQ`]. `ROW_NUMBER()` over the query gives it, but only on one partition, so the
//! scan, the view's `WHERE` and its projection — a large part of a run — used one core.
//!
//! When the view's query is planned as a file scan under filters and projections only,
//! DataFusion splits the files into partitions that are contiguous stretches of the
//! source, in order: files sorted by path, then byte ranges in order (checked on the plan,
//! with work stealing between partitions switched off). Within one partition rows keep
//! their order, so (partition, row within the partition) is the source order: partition
//! `p` numbers its rows from `p × 2^40 + 1` on its own, and all partitions run at once.
//! Any other plan (joins, aggregates, sorts, an in-memory table) is numbered on one
//! partition, as before. The numbers order the rows; they are not consecutive.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream,
};
use datafusion::prelude::{DataFrame, Expr, SessionContext};
use futures::StreamExt;

use crate::Result;
use crate::materialize::SEQ;

/// Partition `p`'s rows are numbered from `p × PARTITION_STRIDE + 1`.
const PARTITION_STRIDE: u64 = 1 << 40;
/// At most this many partitions, so every number stays below the pushed rows' (2^48).
const MAX_PARTITIONS: usize = 64;

/// A session sharing `ordered`'s tables and memory, planning scans over `partitions`
/// partitions that each read their own files in order (no work stealing, no round-robin
/// repartitioning).
pub(crate) fn scan_session(ordered: &SessionContext, partitions: usize) -> SessionContext {
    let mut config = ordered
        .copied_config()
        .with_target_partitions(partitions.clamp(1, MAX_PARTITIONS))
        .with_round_robin_repartition(false)
        // (A new default catalog would hide `ordered`'s tables.)
        .with_create_default_catalog_and_schema(false);
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    let state = SessionStateBuilder::new_from_existing(ordered.state())
        .with_config(config)
        .build();
    SessionContext::new_with_state(state)
}

/// One view query's rows, planned in the one-partition session and in a
/// [`scan_session`].
pub(crate) struct ViewRows {
    pub one_partition: DataFrame,
    pub per_core: DataFrame,
}

impl ViewRows {
    /// The rows passing `keep`, with [`SEQ`] (`UInt64`, from 1) giving their source
    /// order, as a frame of the `ordered` session.
    pub(crate) async fn numbered(self, ordered: &SessionContext, keep: Expr) -> Result<DataFrame> {
        let per_core = self.per_core.filter(keep.clone())?;
        let task = Arc::new(per_core.task_ctx());
        let plan = per_core.create_physical_plan().await?;
        if plan.output_partitioning().partition_count() < 2 || !in_source_order(&plan) {
            return Ok(self
                .one_partition
                .filter(keep)?
                .window(vec![row_number().alias(SEQ)])?);
        }
        let mut fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(SEQ, DataType::UInt64, false));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let partitions = (0..plan.output_partitioning().partition_count())
            .map(|partition| {
                Arc::new(NumberedPartition {
                    input: PartitionIn::new(Arc::clone(&plan), partition, Arc::clone(&task)),
                    schema: Arc::clone(&schema),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let table = StreamingTable::try_new(schema, partitions)?;
        Ok(ordered.read_table(Arc::new(table))?)
    }
}

/// Whether each of `plan`'s partitions is a contiguous stretch of the source, the
/// partitions in source order: filters and projections over a file scan whose groups
/// list their files (and byte ranges) in order.
fn in_source_order(plan: &Arc<dyn ExecutionPlan>) -> bool {
    const ROW_WISE: [&str; 4] = [
        "FilterExec",
        "ProjectionExec",
        "CoalesceBatchesExec",
        "CooperativeExec",
    ];
    let mut node = plan;
    loop {
        if let Some(scan) = node.downcast_ref::<DataSourceExec>() {
            return scan
                .data_source()
                .downcast_ref::<FileScanConfig>()
                .is_some_and(files_in_order);
        }
        let children = node.children();
        if !ROW_WISE.contains(&node.name()) || children.len() != 1 {
            return false;
        }
        node = children[0];
    }
}

/// Whether the scan's file groups, one after the other, list (path, byte range start)
/// strictly increasing: each group a stretch of the source following the previous one.
fn files_in_order(scan: &FileScanConfig) -> bool {
    let starts: Vec<(&str, i64)> = scan
        .file_groups
        .iter()
        .flat_map(|group| group.iter())
        .map(|file| {
            (
                file.object_meta.location.as_ref(),
                file.range.as_ref().map_or(0, |r| r.start),
            )
        })
        .collect();
    starts.windows(2).all(|pair| pair[0] < pair[1])
}

/// One output partition of `plan`, run in a task context of its own whatever context
/// runs the plan reading it.
#[derive(Debug)]
pub(crate) struct PartitionIn {
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    task: Arc<TaskContext>,
    schema: SchemaRef,
}

impl PartitionIn {
    pub(crate) fn new(
        plan: Arc<dyn ExecutionPlan>,
        partition: usize,
        task: Arc<TaskContext>,
    ) -> Self {
        let schema = plan.schema();
        PartitionIn {
            plan,
            partition,
            task,
            schema,
        }
    }
}

impl PartitionStream for PartitionIn {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        match self.plan.execute(self.partition, Arc::clone(&self.task)) {
            Ok(stream) => stream,
            Err(e) => {
                let failed = futures::stream::once(async move { Err(e) });
                Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    failed,
                ))
            }
        }
    }
}

/// One partition of the per-core plan (run in the scan session's context: its settings
/// keep each partition on its own files), with its rows numbered.
#[derive(Debug)]
struct NumberedPartition {
    input: PartitionIn,
    schema: SchemaRef,
}

impl PartitionStream for NumberedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let input = self.input.execute(ctx);
        let mut next = self.input.partition as u64 * PARTITION_STRIDE + 1;
        let output = Arc::clone(&self.schema);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let rows = batch.num_rows() as u64;
            let seq: ArrayRef = Arc::new(UInt64Array::from_iter_values(next..next + rows));
            next += rows;
            let mut columns = batch.columns().to_vec();
            columns.push(seq);
            Ok(RecordBatch::try_new(Arc::clone(&output), columns)?)
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, col, lit};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// Writes `files` Parquet files of `rows` rows each (small row groups) whose `id`
    /// column counts up across the files in path order: the source order.
    fn write_source(dir: &std::path::Path, files: usize, rows: i64) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        for f in 0..files {
            let first = f as i64 * rows;
            let ids = Int64Array::from_iter_values(first..first + rows);
            // Values that do not follow the ids, so the filter keeps an irregular subset.
            let values =
                Int64Array::from_iter_values((first..first + rows).map(|i| (i * 7919) % 13));
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids), Arc::new(values)])
                    .unwrap();
            let file = std::fs::File::create(dir.join(format!("part-{f:03}.parquet"))).unwrap();
            let properties = WriterProperties::builder()
                .set_max_row_group_row_count(Some(1_000))
                .build();
            let mut writer =
                ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
    }

    /// The `id`s of the numbered rows, sorted by their number, and whether the rows
    /// were numbered on several partitions.
    async fn numbered_ids(dir: &std::path::Path, query: &str) -> (Vec<i64>, bool) {
        let ordered =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        ordered
            .register_parquet(
                "events",
                dir.to_str().unwrap(),
                ParquetReadOptions::default(),
            )
            .await
            .unwrap();
        let mut scan = scan_session(&ordered, 3);
        // Split even these small files into byte ranges.
        let mut state = scan.state();
        state
            .config_mut()
            .options_mut()
            .optimizer
            .repartition_file_min_size = 0;
        scan = SessionContext::new_with_state(state);
        let rows = ViewRows {
            one_partition: ordered.sql(query).await.unwrap(),
            per_core: scan.sql(query).await.unwrap(),
        };
        let frame = rows
            .numbered(&ordered, col("v").not_eq(lit(5i64)))
            .await
            .unwrap();
        let parallel = frame
            .clone()
            .create_physical_plan()
            .await
            .unwrap()
            .output_partitioning()
            .partition_count()
            > 1;
        let batches = frame
            .sort(vec![col(SEQ).sort(true, false)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut ids = Vec::new();
        let mut last = 0u64;
        for batch in batches {
            let seq = batch
                .column_by_name(SEQ)
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt64Type>();
            for i in 0..batch.num_rows() {
                assert!(seq.value(i) > last, "numbers are unique and start at 1");
                last = seq.value(i);
            }
            ids.extend(
                batch
                    .column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values(),
            );
        }
        (ids, parallel)
    }

    fn expected_ids(files: usize, rows: i64) -> Vec<i64> {
        (0..files as i64 * rows)
            .filter(|i| (i * 7919) % 13 != 5)
            .collect()
    }

    #[tokio::test]
    async fn byte_ranges_of_one_file_are_numbered_in_source_order() {
        let dir = tempfile::tempdir().unwrap();
        write_source(dir.path(), 1, 60_000);
        let (ids, parallel) = numbered_ids(dir.path(), "SELECT id, v + 0 AS v FROM events").await;
        assert!(parallel, "the file is split over several partitions");
        assert_eq!(ids, expected_ids(1, 60_000));
    }

    #[tokio::test]
    async fn groups_of_files_are_numbered_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        write_source(dir.path(), 7, 3_000);
        let (ids, parallel) =
            numbered_ids(dir.path(), "SELECT id, v FROM events WHERE id >= 0").await;
        assert!(parallel, "the files are split over several partitions");
        assert_eq!(ids, expected_ids(7, 3_000));
    }

    #[tokio::test]
    async fn other_plans_are_numbered_on_one_partition() {
        let dir = tempfile::tempdir().unwrap();
        write_source(dir.path(), 3, 2_000);
        let (ids, parallel) = numbered_ids(
            dir.path(),
            "SELECT id, MAX(v) AS v FROM events GROUP BY id ORDER BY id",
        )
        .await;
        assert!(!parallel, "an aggregate is numbered on one partition");
        assert_eq!(ids, expected_ids(3, 2_000));
    }
}
