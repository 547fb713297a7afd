//! [`FeatureStore`]: one feature repository — its config, definitions and registry —
//! and the operations the CLI and server run on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use quiver_core::clock::{Clock, SystemClock};
use quiver_core::config::Config;
use quiver_core::model::{Object, ObjectKind};
use quiver_core::registry::{HistoryEntry, ObjectRecord, Plan, Registry, RunClaim, RunRecord};

use crate::catalog::Catalog;
use crate::{Error, Result, definitions};

/// A feature repository opened for work.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    root: PathBuf,
    config: Config,
    registry: Registry,
    clock: Arc<dyn Clock>,
    online: Arc<tokio::sync::OnceCell<Arc<dyn quiver_online::OnlineStore>>>,
    catalog: Arc<std::sync::Mutex<Option<CachedCatalog>>>,
}

/// How long a cached catalog is trusted before the registry is asked again.
const CATALOG_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The catalog, the registry change stamp it was built at, and when that was checked.
#[derive(Debug)]
struct CachedCatalog {
    stamp: (i64, i64),
    checked: std::time::Instant,
    catalog: Arc<Catalog>,
}

impl FeatureStore {
    /// Opens the repository at `root` (the folder holding `quiver.toml`).
    pub fn open(root: impl AsRef<Path>) -> Result<FeatureStore> {
        let root = root.as_ref();
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let config = Config::load(&root)?;
        let registry = Registry::open(&config.registry_location(&root), &config.project)?;
        Ok(FeatureStore {
            root,
            config,
            registry,
            clock: Arc::new(SystemClock),
            online: Arc::new(tokio::sync::OnceCell::new()),
            catalog: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Parses and validates the definitions, typing every view with DataFusion.
    pub async fn definitions(&self) -> Result<Vec<Object>> {
        definitions::load(&self.root, &self.config.definitions, self.new_engine()).await
    }

    /// What `apply` would change in the registry.
    pub async fn plan(&self) -> Result<Plan> {
        let desired = self.definitions().await?;
        let registry = self.registry.clone();
        blocking(move || registry.plan(&desired)).await
    }

    /// Validates the definitions and records them in the registry.
    pub async fn apply(&self) -> Result<Plan> {
        let desired = self.definitions().await?;
        let registry = self.registry.clone();
        let now = self.clock.now();
        let plan = blocking(move || registry.apply(&desired, now)).await?;
        // This process sees its own change at once.
        self.forget_catalog();
        tracing::info!(
            changes = plan.changes.len(),
            unchanged = plan.unchanged,
            "applied definitions"
        );
        Ok(plan)
    }

    /// Every live object at its current version.
    pub async fn list(&self) -> Result<Vec<ObjectRecord>> {
        let registry = self.registry.clone();
        blocking(move || registry.list(false)).await
    }

    /// The object called `name` at its current version.
    pub async fn describe(&self, name: &str) -> Result<ObjectRecord> {
        let registry = self.registry.clone();
        let name = name.to_string();
        blocking(move || registry.get(&name)).await
    }

    /// Every live feature view with the version lookups read (`serving_version`: the
    /// newest materialized one; it trails `version` until a new version is materialized).
    pub async fn view_statuses(&self) -> Result<Vec<ViewStatus>> {
        let catalog = self.catalog().await?;
        let mut out = Vec::new();
        for record in self.list().await? {
            if record.kind != ObjectKind::FeatureView {
                continue;
            }
            let serving_version = catalog.serving_version(&record.name)?;
            out.push(ViewStatus {
                record,
                serving_version,
            });
        }
        Ok(out)
    }

    /// The applied version of a view.
    pub async fn applied_version(&self, view: &str) -> Result<u32> {
        Ok(self.catalog().await?.view(view)?.version)
    }

    /// A view's event-time column and created column (when its source has one).
    pub async fn view_time_columns(&self, view: &str) -> Result<(String, Option<String>)> {
        let catalog = self.catalog().await?;
        let view = catalog.view(view)?;
        let schema = &view.view.schema;
        let Some(timestamp) = &schema.timestamp else {
            return Err(view.no_rows("write"));
        };
        Ok((
            timestamp.name.clone(),
            schema.created.as_ref().map(|c| c.name.clone()),
        ))
    }

    /// Everything `apply` did to the object called `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let registry = self.registry.clone();
        let name = name.to_string();
        blocking(move || registry.history(&name)).await
    }
}

impl FeatureStore {
    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub(crate) fn online_cell(
        &self,
    ) -> &tokio::sync::OnceCell<Arc<dyn quiver_online::OnlineStore>> {
        &self.online
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Drops the cached catalog: this process changed the registry (apply, a run, a drop)
    /// and its next request must see the change.
    pub(crate) fn forget_catalog(&self) {
        *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The applied definitions, indexed by name. Cached: the registry's change stamp is
    /// checked at most once per [`CATALOG_RECHECK`], and the catalog rebuilt only when
    /// `apply` changed something — so a running server picks up changes within a second
    /// without paying a registry query per request.
    pub(crate) async fn catalog(&self) -> Result<Arc<Catalog>> {
        if let Some(cached) = self
            .catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && cached.checked.elapsed() < CATALOG_RECHECK
        {
            return Ok(Arc::clone(&cached.catalog));
        }
        let registry = self.registry.clone();
        let stamp = match blocking(move || registry.change_stamp()).await {
            Ok(stamp) => stamp,
            Err(e) => {
                // The registry is unreachable (a PostgreSQL restart, a network cut):
                // serving goes on with the definitions it has, and asks again in a
                // second. Without a catalog yet there is nothing to serve from.
                let mut guard = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
                let Some(cached) = guard.as_mut() else {
                    return Err(e);
                };
                tracing::warn!(error = %e, "registry unreachable; serving the definitions read before");
                cached.checked = std::time::Instant::now();
                return Ok(Arc::clone(&cached.catalog));
            }
        };
        {
            let mut guard = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = guard.as_mut()
                && cached.stamp == stamp
            {
                cached.checked = std::time::Instant::now();
                return Ok(Arc::clone(&cached.catalog));
            }
        }
        let registry = self.registry.clone();
        let project = self.config.project.clone();
        let catalog = tokio::task::spawn_blocking(move || -> Result<Catalog> {
            let records = registry.list(false)?;
            let materialized = registry.materialized_versions()?;
            Catalog::new(records, &project, &materialized, |name, version| {
                Ok(
                    match registry.version(ObjectKind::FeatureView, name, version)? {
                        Some(Object::FeatureView(view)) => Some(view),
                        _ => None,
                    },
                )
            })
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let catalog = Arc::new(catalog);
        *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedCatalog {
            stamp,
            checked: std::time::Instant::now(),
            catalog: Arc::clone(&catalog),
        });
        Ok(catalog)
    }

    pub(crate) async fn record_run(
        &self,
        kind: &'static str,
        started: DateTime<Utc>,
        details: serde_json::Value,
    ) -> Result<i64> {
        let registry = self.registry.clone();
        let finished = self.clock.now();
        blocking(move || registry.record_run(kind, started, finished, &details)).await
    }

    /// Claims the materialization of each of `views` against every process sharing the
    /// registry (other servers, on other machines with a PostgreSQL registry) for as long
    /// as the claims live. `Err(view)` names the first view another process is
    /// materializing; nothing stays claimed then.
    pub async fn claim_materializations(
        &self,
        views: Vec<String>,
    ) -> Result<std::result::Result<Vec<RunClaim>, String>> {
        let registry = self.registry.clone();
        blocking(move || {
            let mut claims = Vec::with_capacity(views.len());
            for view in views {
                match registry.try_claim_run(&format!("materialize:{view}"))? {
                    Some(claim) => claims.push(claim),
                    None => return Ok(Err(view)),
                }
            }
            Ok(Ok(claims))
        })
        .await
    }

    /// Recorded runs of one kind (`materialize`, `export`) or all, newest first.
    pub async fn runs(&self, kind: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let registry = self.registry.clone();
        let kind = kind.map(str::to_string);
        blocking(move || registry.runs(kind.as_deref(), limit)).await
    }
}

/// A feature view's registry record and the version lookups read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ViewStatus {
    #[serde(flatten)]
    pub record: ObjectRecord,
    /// The version lookups read: the newest one materialized (or `version` when none is).
    pub serving_version: u32,
}

/// Runs registry (SQLite) work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> quiver_core::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::from)
}
