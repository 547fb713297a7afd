//! `quiver._quiver`: the native half of the Python package `quiver`. It embeds the
//! [`quiver::FeatureStore`] facade — no server — and exchanges data as Arrow through the
//! C data interface (pyarrow), never row by row. The Python half (`python/quiver`) gives
//! it Feast's shapes: `FeatureStore`, `RetrievalJob`, `OnlineResponse`.
//!
//! Every call releases the GIL while Rust works and checks for ctrl-c every 100 ms (an
//! interrupted call is cancelled and raises `KeyboardInterrupt`). Errors are
//! `quiver.QuiverError` with the CLI's text (definition errors keep file:line:col).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_pyarrow::PyArrowType;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use quiver::arrow::array::{ArrayRef, RecordBatch};
use quiver::arrow::datatypes::{Field, Schema};
use quiver::{FeatureStore, MaterializeOptions, PushTo};

create_exception!(
    quiver,
    QuiverError,
    PyException,
    "A Quiver error: a bad definition, name, input or configuration, or a store that is unavailable. The message says what, where and how to fix it."
);

/// The runtime every call runs on (the GIL released meanwhile).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("quiver")
            .enable_all()
            .build()
            .expect("a tokio runtime builds")
    })
}

fn error(e: quiver::Error) -> PyErr {
    QuiverError::new_err(e.to_string())
}

/// Runs the future `work` makes to the end without the GIL, unless ctrl-c is pressed:
/// then it is dropped (cancelled) and `KeyboardInterrupt` is raised. (The future runs on
/// this thread, so it need not be `Send`.)
fn run<T: Send, F: Future<Output = quiver::Result<T>>>(
    py: Python<'_>,
    work: impl FnOnce() -> F + Send,
) -> PyResult<T> {
    py.detach(|| {
        runtime().block_on(async {
            let mut work = std::pin::pin!(work());
            loop {
                tokio::select! {
                    done = &mut work => return done.map_err(error),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}

fn status_name(status: quiver::FeatureStatus) -> &'static str {
    match status {
        quiver::FeatureStatus::Present => "PRESENT",
        quiver::FeatureStatus::NullValue => "NULL_VALUE",
        quiver::FeatureStatus::NotFound => "NOT_FOUND",
        quiver::FeatureStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
    }
}

fn to_json(value: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| QuiverError::new_err(e.to_string()))
}

fn time(micros: Option<i64>) -> PyResult<Option<chrono::DateTime<chrono::Utc>>> {
    micros
        .map(|m| {
            chrono::DateTime::from_timestamp_micros(m)
                .ok_or_else(|| QuiverError::new_err(format!("{m} µs is not a time")))
        })
        .transpose()
}

/// A feature repository opened like the CLI opens it: its `quiver.toml` names the
/// registry, the offline root and the online store.
#[pyclass(name = "FeatureStore", module = "quiver._quiver", frozen)]
struct Store {
    inner: Arc<FeatureStore>,
}

#[pymethods]
impl Store {
    #[new]
    fn new(py: Python<'_>, repo_path: PathBuf) -> PyResult<Self> {
        let store = py.detach(|| {
            let _runtime = runtime().enter();
            FeatureStore::open(&repo_path)
        });
        Ok(Store {
            inner: Arc::new(store.map_err(error)?),
        })
    }

    /// The repository's folder.
    #[getter]
    fn repo_path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// The project name.
    #[getter]
    fn project(&self) -> String {
        self.inner.config().project.clone()
    }

    /// What `apply` would change, as JSON.
    fn plan(&self, py: Python<'_>) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        to_json(&run(py, move || async move { store.plan().await })?)
    }

    /// Records the definitions in the registry; the changes, as JSON.
    fn apply(&self, py: Python<'_>) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        to_json(&run(py, move || async move { store.apply().await })?)
    }

    /// Materializes `[start, end]` (µs since the epoch, UTC; `None`: all history / now)
    /// of the named views (empty: all); the reports, as JSON.
    #[pyo3(signature = (start, end, views))]
    fn materialize(
        &self,
        py: Python<'_>,
        start: Option<i64>,
        end: Option<i64>,
        views: Vec<String>,
    ) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        let options = MaterializeOptions {
            start: time(start)?,
            end: time(end)?,
            views,
        };
        to_json(&run(py, move || async move {
            store.materialize(options).await
        })?)
    }

    /// Materializes each view from its watermark to `end`; the reports, as JSON.
    #[pyo3(signature = (end, views))]
    fn materialize_incremental(
        &self,
        py: Python<'_>,
        end: Option<i64>,
        views: Vec<String>,
    ) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        let end = time(end)?;
        to_json(&run(py, move || async move {
            store.materialize_incremental(end, &views).await
        })?)
    }

    /// The training set of a spine (a pyarrow RecordBatch, or a SQL query over the
    /// sources): spine columns in spine order, then the features.
    #[pyo3(signature = (spine, spine_sql, features, service, full_feature_names))]
    fn get_historical_features(
        &self,
        py: Python<'_>,
        spine: Option<PyArrowType<RecordBatch>>,
        spine_sql: Option<String>,
        features: Vec<String>,
        service: Option<String>,
        full_feature_names: bool,
    ) -> PyResult<PyArrowType<RecordBatch>> {
        let store = Arc::clone(&self.inner);
        let export = run(py, move || async move {
            let mut export = store
                .export()
                .with_features(features)
                .with_full_feature_names(full_feature_names);
            if let Some(service) = service {
                export = export.with_service(service);
            }
            export = match (spine, spine_sql) {
                (Some(batch), _) => export.with_spine(batch.0),
                (None, Some(sql)) => export.with_spine_sql(sql),
                (None, None) => export,
            };
            export.execute().await
        })?;
        Ok(PyArrowType(export.batch))
    }

    /// Looks up the latest values for each entity row (a pyarrow RecordBatch of entity
    /// keys and request fields). Returns the values (one column per feature, NULL where
    /// nothing was found), the statuses and the event times (µs) per feature.
    #[pyo3(signature = (entities, features, service, full_feature_names))]
    #[allow(clippy::type_complexity)]
    fn get_online_features(
        &self,
        py: Python<'_>,
        entities: PyArrowType<RecordBatch>,
        features: Vec<String>,
        service: Option<String>,
        full_feature_names: bool,
    ) -> PyResult<(
        PyArrowType<RecordBatch>,
        Vec<Vec<&'static str>>,
        Vec<Vec<Option<i64>>>,
    )> {
        let store = Arc::clone(&self.inner);
        let found = run(py, move || async move {
            let plan = store
                .lookup_plan(&features, service.as_deref(), full_feature_names)
                .await?;
            store.get_online_features(&plan, &entities.0).await
        })?;
        let fields: Vec<Field> = found
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.values.data_type().clone(), true))
            .collect();
        let values: Vec<ArrayRef> = found
            .columns
            .iter()
            .map(|c| Arc::clone(&c.values))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), values)
            .map_err(|e| QuiverError::new_err(e.to_string()))?;
        let statuses = found
            .columns
            .iter()
            .map(|c| c.statuses.iter().map(|s| status_name(*s)).collect())
            .collect();
        let times = found
            .columns
            .into_iter()
            .map(|c| c.event_timestamps)
            .collect();
        Ok((PyArrowType(batch), statuses, times))
    }

    /// Pushes rows (a pyarrow RecordBatch) into a view or source, to `online`,
    /// `offline` or `online_and_offline`; what each view took, as JSON.
    fn push(
        &self,
        py: Python<'_>,
        target: String,
        rows: PyArrowType<RecordBatch>,
        to: &str,
    ) -> PyResult<String> {
        let to = match to {
            "online" => PushTo::Online,
            "offline" => PushTo::Offline,
            "online_and_offline" => PushTo::OnlineAndOffline,
            other => {
                return Err(QuiverError::new_err(format!(
                    "push: `to` must be \"online\", \"offline\" or \"online_and_offline\", not {other:?}"
                )));
            }
        };
        let store = Arc::clone(&self.inner);
        to_json(&run(py, move || async move {
            store.push(&target, rows.0, to).await
        })?)
    }

    /// Every object in the registry (entities, sources, views, services), as JSON.
    fn list(&self, py: Python<'_>) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        to_json(&run(py, move || async move { store.list().await })?)
    }

    /// One object of the registry by name, as JSON.
    fn describe(&self, py: Python<'_>, name: String) -> PyResult<String> {
        let store = Arc::clone(&self.inner);
        to_json(&run(
            py,
            move || async move { store.describe(&name).await },
        )?)
    }
}

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    m.add("QuiverError", m.py().get_type::<QuiverError>())?;
    Ok(())
}
