//! The applied definitions, as the registry holds them now, indexed by name: what
//! materialization, export and lookups work from (not the files on disk, which may be
//! ahead).
//!
//! A view has an *applied* version (the newest `apply` recorded) and a *serving* version:
//! the newest version whose materialization has completed at least once, which lookups
//! read. After `apply` makes a new version, lookups keep answering from the previous one
//! until the new one is materialized, so a definition change never takes serving down.
//! Exports join the applied version (training needs the definition as written). A
//! feature service may pin a version (`view@v2.feature`) for both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use quiver_core::diagnostic::closest;
use quiver_core::model::{
    Entity, FeatureService, KeyType, Object, RequestSource, ResolvedView, Source,
};
use quiver_core::registry::ObjectRecord;
use quiver_offline::normalize::ViewColumns;
use quiver_offline::on_demand::OnDemandProgram;
use quiver_offline::window::WindowProgram;
use quiver_offline::{OfflineEngine, ViewTable};
use quiver_online::ViewRef;

use crate::{Error, Result};

/// A feature view at one version.
#[derive(Debug, Clone)]
pub struct CatalogView {
    pub view: ResolvedView,
    pub version: u32,
    pub key_types: Vec<KeyType>,
    /// The view's identity in the online store, with each feature's Arrow type parsed
    /// once from the registry's type names (the lookup path reads it on every request);
    /// `Err` names a type that does not parse. Shared: every lookup plan holds it.
    pub online: Result<Arc<ViewRef>, String>,
    /// The columns of its offline table.
    columns: ViewColumns,
    /// For an aggregation view: its program, compiled once per catalog.
    window: Option<Result<Arc<WindowProgram>, String>>,
    /// For an on-demand view: its program, compiled once per catalog on first use.
    on_demand: Option<Arc<tokio::sync::OnceCell<Arc<OnDemandProgram>>>>,
}

impl CatalogView {
    fn new(
        view: ResolvedView,
        version: u32,
        entities: &BTreeMap<String, Entity>,
        project: &str,
    ) -> Self {
        let key_types = view
            .view
            .entities
            .iter()
            .filter_map(|e| entities.get(e))
            .flat_map(|e| e.keys.iter().map(|k| k.key_type))
            .collect();
        let key_types: Vec<KeyType> = key_types;
        let window = view.schema.window.as_ref().map(|schema| {
            WindowProgram::new(&view.view, schema)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        let on_demand = view
            .schema
            .on_demand
            .as_ref()
            .map(|_| Arc::new(tokio::sync::OnceCell::new()));
        CatalogView {
            on_demand,
            online: feature_types(&view).map(|features| {
                Arc::new(ViewRef {
                    project: project.to_string(),
                    view: view.view.name.clone(),
                    version,
                    ttl_micros: view.view.ttl.map(|t| t.micros()),
                    features,
                })
            }),
            columns: ViewColumns::new(&view.schema, &key_types),
            view,
            version,
            key_types,
            window,
        }
    }

    /// The columns of the view's offline table.
    pub fn columns(&self) -> &ViewColumns {
        &self.columns
    }

    /// The compiled program of an aggregation view (`None` for a row view).
    pub fn window(&self) -> Result<Option<&Arc<WindowProgram>>> {
        match &self.window {
            None => Ok(None),
            Some(Ok(program)) => Ok(Some(program)),
            Some(Err(e)) => Err(Error::Task(e.clone())),
        }
    }

    /// Whether this is an on-demand view (no table, no online rows).
    pub fn is_on_demand(&self) -> bool {
        self.on_demand.is_some()
    }

    /// The compiled program of an on-demand view (`None` for other views).
    pub async fn on_demand_program(&self) -> Result<Option<Arc<OnDemandProgram>>> {
        let (Some(cell), Some(schema)) = (&self.on_demand, &self.view.schema.on_demand) else {
            return Ok(None);
        };
        let program = cell
            .get_or_try_init(|| async {
                OnDemandProgram::compile(self.name(), &self.view.view.query, schema)
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(Some(Arc::clone(program)))
    }

    /// The error for storing rows of an on-demand view (`action`: materialize, push, …).
    pub fn no_rows(&self, action: &'static str) -> Error {
        Error::OnDemandHasNoRows {
            view: self.name().to_string(),
            action,
            inputs: self.view.view.sources.join(", "),
            hint: "materialize, push or write its input views instead",
        }
    }

    /// The view's offline table as the engine writes it.
    pub fn table(&self) -> Result<ViewTable<'_>> {
        let query = match &self.view.schema.window {
            Some(window) => window.event_query.as_str(),
            None => self.view.view.query.as_str(),
        };
        Ok(ViewTable {
            view: &self.view.view,
            version: self.version,
            query,
            columns: &self.columns,
            window: self.window()?,
        })
    }

    pub fn name(&self) -> &str {
        &self.view.view.name
    }

    /// The online identity of this view version.
    pub fn online_ref(&self) -> Result<&Arc<ViewRef>> {
        self.online.as_ref().map_err(|e| Error::Task(e.clone()))
    }

    /// The names of the view's features, in order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.view.schema.features.iter().map(|c| c.name.as_str())
    }
}

/// Which version of a view a request reads when it does not pin one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Lookups: the serving version.
    Online,
    /// Exports and materialization: the applied version.
    Offline,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub entities: BTreeMap<String, Entity>,
    pub sources: BTreeMap<String, Source>,
    pub request_sources: BTreeMap<String, RequestSource>,
    /// Every live view at its applied version.
    pub views: BTreeMap<String, CatalogView>,
    pub services: BTreeMap<String, FeatureService>,
    /// The version lookups read, for views where it is not the applied one.
    serving: BTreeMap<String, u32>,
    /// Versions other than the applied ones that lookups or services need.
    older: BTreeMap<(String, u32), CatalogView>,
    /// Per source pushed into: what its pushes plan with, built by the first push and
    /// reused by the catalog's later ones (registering a source reads the footers of
    /// its files, and planning a view's query to see whether it aggregates takes a
    /// session: together milliseconds per push).
    push_plans: tokio::sync::Mutex<BTreeMap<String, Arc<PushPlan>>>,
    /// Each source's schema as its files give it, read on first use by a push (the
    /// server asks for it on every push request).
    source_schemas: tokio::sync::Mutex<BTreeMap<String, SchemaRef>>,
    /// The lookup plans made from this catalog, by request.
    lookup_plans: std::sync::Mutex<crate::online::LookupPlans>,
}

/// What pushes into one source plan with: an engine with the sources of the views that
/// read it registered, and which of those (row) views aggregate (they refuse pushes).
#[derive(Debug)]
pub(crate) struct PushPlan {
    pub engine: OfflineEngine,
    pub aggregating: BTreeSet<String>,
}

impl Catalog {
    /// The catalog of `records` (the live objects of the registry of `project`), with
    /// `materialized` naming the (view, version) pairs materialization has completed for,
    /// and `load` reading an older version of a view from the registry.
    pub fn new(
        records: Vec<ObjectRecord>,
        project: &str,
        materialized: &[(String, u32)],
        mut load: impl FnMut(&str, u32) -> Result<Option<ResolvedView>>,
    ) -> Result<Self> {
        let mut catalog = Catalog::default();
        let mut views = Vec::new();
        for record in records {
            match record.definition {
                Object::Entity(e) => {
                    catalog.entities.insert(e.name.clone(), e);
                }
                Object::Source(s) => {
                    catalog.sources.insert(s.name.clone(), s);
                }
                Object::RequestSource(s) => {
                    catalog.request_sources.insert(s.name.clone(), s);
                }
                Object::FeatureView(v) => views.push((v, record.version)),
                Object::FeatureService(s) => {
                    catalog.services.insert(s.name.clone(), s);
                }
            }
        }
        for (view, version) in views {
            let name = view.view.name.clone();
            let view = CatalogView::new(view, version, &catalog.entities, project);
            catalog.views.insert(name, view);
        }

        // Versions to keep in reach: serving versions behind the applied one, pins.
        let mut wanted: BTreeSet<(String, u32)> = BTreeSet::new();
        let done: BTreeSet<(&str, u32)> =
            materialized.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        for (name, view) in &catalog.views {
            if done.contains(&(name.as_str(), view.version)) {
                continue;
            }
            if let Some(older) = (1..view.version)
                .rev()
                .find(|v| done.contains(&(name.as_str(), *v)))
            {
                catalog.serving.insert(name.clone(), older);
                wanted.insert((name.clone(), older));
            }
        }
        for service in catalog.services.values() {
            for selection in &service.features {
                if let Some(version) = selection.version
                    && catalog
                        .views
                        .get(&selection.view)
                        .is_some_and(|v| v.version != version)
                {
                    wanted.insert((selection.view.clone(), version));
                }
            }
        }
        for (name, version) in wanted {
            if let Some(view) = load(&name, version)? {
                let view = CatalogView::new(view, version, &catalog.entities, project);
                catalog.older.insert((name, version), view);
            }
        }
        Ok(catalog)
    }

    /// A view at its applied version.
    pub fn view(&self, name: &str) -> Result<&CatalogView> {
        self.views
            .get(name)
            .ok_or_else(|| Error::UnknownFeatureView {
                name: name.to_string(),
                suggestion: closest(name, self.views.keys().map(String::as_str)),
            })
    }

    /// The version lookups of a view read: the newest materialized one (the applied
    /// version when none is).
    pub fn serving_version(&self, name: &str) -> Result<u32> {
        let applied = self.view(name)?.version;
        Ok(self.serving.get(name).copied().unwrap_or(applied))
    }

    /// A view at a given version (the applied one, or one the catalog keeps in reach).
    pub fn view_at(&self, name: &str, version: u32) -> Result<&CatalogView> {
        let applied = self.view(name)?;
        if applied.version == version {
            return Ok(applied);
        }
        self.older
            .get(&(name.to_string(), version))
            .ok_or_else(|| Error::UnknownViewVersion {
                view: name.to_string(),
                version,
                latest: applied.version,
            })
    }

    pub fn service(&self, name: &str) -> Result<&FeatureService> {
        self.services
            .get(name)
            .ok_or_else(|| Error::UnknownFeatureService {
                name: name.to_string(),
                suggestion: closest(name, self.services.keys().map(String::as_str)),
            })
    }

    /// The view versions and features a request names — a feature service or
    /// `view:feature` references (`view:*` for all of a view) — in request order, each
    /// view version once. Features are checked against the version a pin names, else the
    /// applied version; an unpinned reference reads the version `purpose` says, where a
    /// feature only the applied version has is absent (lookups answer `NOT_FOUND`).
    pub fn resolve_features(
        &self,
        service: Option<&str>,
        features: &[String],
        purpose: Purpose,
    ) -> Result<Vec<(&CatalogView, Vec<String>)>> {
        let mut references: Vec<(String, Option<u32>, Option<String>)> = Vec::new();
        match (service, features.is_empty()) {
            (Some(_), false) => return Err(Error::FeaturesAndService),
            (Some(service), true) => {
                for selection in &self.service(service)?.features {
                    references.push((
                        selection.view.clone(),
                        selection.version,
                        selection.feature.clone(),
                    ));
                }
            }
            (None, false) => {
                for text in features {
                    let (view, feature) = text
                        .split_once(':')
                        .ok_or_else(|| Error::BadFeatureReference { text: text.clone() })?;
                    let feature = (feature != "*").then(|| feature.to_string());
                    references.push((view.to_string(), None, feature));
                }
            }
            (None, true) => return Err(Error::NoFeaturesRequested),
        }
        let mut out: Vec<(&CatalogView, Vec<String>)> = Vec::new();
        for (view_name, pin, feature) in references {
            let applied = self.view(&view_name)?;
            let defining = match pin {
                Some(version) => self.view_at(&view_name, version)?,
                None => applied,
            };
            let read = match (pin, purpose) {
                (Some(_), _) | (None, Purpose::Offline) => defining,
                (None, Purpose::Online) => {
                    self.view_at(&view_name, self.serving_version(&view_name)?)?
                }
            };
            let all: Vec<String> = defining.feature_names().map(str::to_string).collect();
            let wanted = match feature {
                None => all,
                Some(f) if all.contains(&f) => vec![f],
                Some(f) => {
                    return Err(Error::UnknownFeature {
                        view: view_name,
                        suggestion: closest(&f, all.iter().map(String::as_str)),
                        feature: f,
                    });
                }
            };
            match out
                .iter_mut()
                .find(|(v, _)| v.name() == read.name() && v.version == read.version)
            {
                Some((_, features)) => {
                    for f in wanted {
                        if !features.contains(&f) {
                            features.push(f);
                        }
                    }
                }
                None => out.push((read, wanted)),
            }
        }
        Ok(out)
    }

    /// An engine with the sources of the given views registered.
    pub(crate) async fn engine(
        &self,
        store: &crate::FeatureStore,
        views: &[&CatalogView],
    ) -> Result<OfflineEngine> {
        let engine = store.new_engine();
        let mut registered = std::collections::HashSet::new();
        for view in views {
            for source in &view.view.view.sources {
                if registered.insert(source.clone())
                    && let Some(source) = self.sources.get(source)
                {
                    engine.register_source(source).await?;
                }
            }
        }
        Ok(engine)
    }

    /// The schema of `source` as its files give it, read on first use.
    pub(crate) async fn source_schema(
        &self,
        store: &crate::FeatureStore,
        source: &Source,
    ) -> Result<SchemaRef> {
        let mut schemas = self.source_schemas.lock().await;
        if let Some(schema) = schemas.get(&source.name) {
            return Ok(Arc::clone(schema));
        }
        let engine = store.new_engine();
        engine.register_source(source).await?;
        let schema = engine.source_schema(&source.name).await?;
        schemas.insert(source.name.clone(), Arc::clone(&schema));
        Ok(schema)
    }

    /// The lookup plans made from this catalog ([`crate::FeatureStore::lookup_plan`]).
    pub(crate) fn lookup_plans(&self) -> std::sync::MutexGuard<'_, crate::online::LookupPlans> {
        self.lookup_plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The push plan of source `source` read by `views`, built on first use.
    pub(crate) async fn push_plan(
        &self,
        store: &crate::FeatureStore,
        source: &str,
        views: &[&CatalogView],
    ) -> Result<Arc<PushPlan>> {
        let mut plans = self.push_plans.lock().await;
        if let Some(plan) = plans.get(source) {
            return Ok(Arc::clone(plan));
        }
        let engine = self.engine(store, views).await?;
        let mut aggregating = BTreeSet::new();
        for view in views {
            // An aggregation view takes events; other aggregating views cannot.
            if !view.view.view.is_windowed() && engine.view_aggregates(&view.view.view).await? {
                aggregating.insert(view.name().to_string());
            }
        }
        let plan = Arc::new(PushPlan {
            engine,
            aggregating,
        });
        plans.insert(source.to_string(), Arc::clone(&plan));
        Ok(plan)
    }

    /// An engine with every source registered (for a spine query).
    pub(crate) async fn engine_with_all_sources(
        &self,
        store: &crate::FeatureStore,
    ) -> Result<OfflineEngine> {
        let engine = store.new_engine();
        for source in self.sources.values() {
            engine.register_source(source).await?;
        }
        Ok(engine)
    }
}

fn feature_types(view: &ResolvedView) -> Result<Vec<(String, DataType)>, String> {
    view.schema
        .features
        .iter()
        .map(|c| match c.data_type.parse::<DataType>() {
            Ok(t) => Ok((c.name.clone(), t)),
            Err(_) => Err(format!(
                "feature `{}` of view `{}` has a type Quiver cannot read back: {}",
                c.name, view.view.name, c.data_type
            )),
        })
        .collect()
}
