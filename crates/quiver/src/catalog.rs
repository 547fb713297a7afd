//! The applied definitions, as the registry holds them now, indexed by name: what
//! materialization and export work from (not the files on disk, which may be ahead).

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use quiver_core::diagnostic::closest;
use quiver_core::model::{Entity, FeatureService, KeyType, Object, ResolvedView, Source};
use quiver_core::registry::ObjectRecord;
use quiver_offline::OfflineEngine;
use quiver_offline::normalize::ViewColumns;
use quiver_online::ViewRef;

use crate::{Error, Result};

/// A feature view at its current version.
#[derive(Debug, Clone)]
pub struct CatalogView {
    pub view: ResolvedView,
    pub version: u32,
    pub key_types: Vec<KeyType>,
    /// The view's identity in the online store, with each feature's Arrow type parsed
    /// once from the registry's type names (the lookup path reads it on every request);
    /// `Err` names a type that does not parse.
    pub online: Result<ViewRef, String>,
}

impl CatalogView {
    pub fn columns(&self) -> ViewColumns {
        ViewColumns::new(&self.view.schema, &self.key_types)
    }

    pub fn name(&self) -> &str {
        &self.view.view.name
    }

    /// The online identity of this view version.
    pub fn online_ref(&self) -> Result<&ViewRef> {
        self.online.as_ref().map_err(|e| Error::Task(e.clone()))
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub entities: BTreeMap<String, Entity>,
    pub sources: BTreeMap<String, Source>,
    pub views: BTreeMap<String, CatalogView>,
    pub services: BTreeMap<String, FeatureService>,
}

impl Catalog {
    /// The catalog of `records`, the live objects of the registry of `project`.
    pub fn new(records: Vec<ObjectRecord>, project: &str) -> Self {
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
                Object::FeatureView(v) => views.push((v, record.version)),
                Object::FeatureService(s) => {
                    catalog.services.insert(s.name.clone(), s);
                }
            }
        }
        for (view, version) in views {
            let key_types = view
                .view
                .entities
                .iter()
                .filter_map(|e| catalog.entities.get(e))
                .flat_map(|e| e.keys.iter().map(|k| k.key_type))
                .collect();
            catalog.views.insert(
                view.view.name.clone(),
                CatalogView {
                    online: feature_types(&view).map(|features| ViewRef {
                        project: project.to_string(),
                        view: view.view.name.clone(),
                        version,
                        ttl_micros: view.view.ttl.map(|t| t.micros()),
                        features,
                    }),
                    view,
                    version,
                    key_types,
                },
            );
        }
        catalog
    }

    pub fn view(&self, name: &str) -> Result<&CatalogView> {
        self.views
            .get(name)
            .ok_or_else(|| Error::UnknownFeatureView {
                name: name.to_string(),
                suggestion: closest(name, self.views.keys().map(String::as_str)),
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

    /// The views and features a request names — a feature service and/or `view:feature`
    /// references (`view:*` for all of a view) — in request order, each view once.
    pub fn resolve_features(
        &self,
        service: Option<&str>,
        features: &[String],
    ) -> Result<Vec<(&CatalogView, Vec<String>)>> {
        let mut references: Vec<(String, Option<String>)> = Vec::new();
        if let Some(service) = service {
            for selection in &self.service(service)?.features {
                references.push((selection.view.clone(), selection.feature.clone()));
            }
        }
        for text in features {
            let (view, feature) = text
                .split_once(':')
                .ok_or_else(|| Error::BadFeatureReference { text: text.clone() })?;
            let feature = (feature != "*").then(|| feature.to_string());
            references.push((view.to_string(), feature));
        }
        if references.is_empty() {
            return Err(Error::NoFeaturesRequested);
        }
        let mut out: Vec<(&CatalogView, Vec<String>)> = Vec::new();
        for (view_name, feature) in references {
            let view = self.view(&view_name)?;
            let all: Vec<String> = view
                .view
                .schema
                .features
                .iter()
                .map(|c| c.name.clone())
                .collect();
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
            match out.iter_mut().find(|(v, _)| v.name() == view.name()) {
                Some((_, features)) => {
                    for f in wanted {
                        if !features.contains(&f) {
                            features.push(f);
                        }
                    }
                }
                None => out.push((view, wanted)),
            }
        }
        Ok(out)
    }

    /// An engine with the sources of the given views registered.
    pub async fn engine(
        &self,
        root: &std::path::Path,
        views: &[&CatalogView],
    ) -> Result<OfflineEngine> {
        let engine = OfflineEngine::new(root);
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

    /// An engine with every source registered (for `--spine-sql`).
    pub async fn engine_with_all_sources(&self, root: &std::path::Path) -> Result<OfflineEngine> {
        let engine = OfflineEngine::new(root);
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
