//! One function per verb: open the repository, call the facade, render the result.

use std::path::{Path, PathBuf};

use anyhow::Context;
use quiver::{FeatureStore, MaterializeOptions};
use quiver_server::wire;

use crate::args::{Cli, Command, RunKind};
use crate::render::{self, outln};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Init { dir } => init(&dir, json),
        Command::Plan => {
            let store = FeatureStore::open(&cli.repo)?;
            let progress = render::Progress::start("planning", json);
            let plan = store.plan().await;
            progress.finish();
            render::plan(&store, &plan?, false, json)
        }
        Command::Apply => {
            let store = FeatureStore::open(&cli.repo)?;
            let progress = render::Progress::start("applying", json);
            let plan = store.apply().await;
            progress.finish();
            render::plan(&store, &plan?, true, json)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "quiver", &mut std::io::stdout());
            Ok(())
        }
        Command::Ls => {
            let store = FeatureStore::open(&cli.repo)?;
            render::list(&store.list().await?, json)
        }
        Command::Describe { name } => {
            let store = FeatureStore::open(&cli.repo)?;
            let record = store.describe(&name).await?;
            let serving =
                if record.kind == quiver::model::ObjectKind::FeatureView && !record.deleted {
                    store
                        .view_statuses()
                        .await?
                        .into_iter()
                        .find(|v| v.record.name == name)
                        .map(|v| v.serving_version)
                } else {
                    None
                };
            render::describe(&record, serving, json)
        }
        Command::History { name } => {
            let store = FeatureStore::open(&cli.repo)?;
            render::history(&store.history(&name).await?, json)
        }
        Command::Materialize { start, end, views } => {
            let store = FeatureStore::open(&cli.repo)?;
            let progress = render::Progress::start("materializing", json);
            let stats = store
                .materialize(MaterializeOptions { start, end, views })
                .await;
            progress.finish();
            render::materialized(&stats?, json)
        }
        Command::MaterializeIncremental { end, views } => {
            let store = FeatureStore::open(&cli.repo)?;
            let progress = render::Progress::start("materializing", json);
            let reports = store.materialize_incremental(end, &views).await;
            progress.finish();
            render::materialized(&reports?, json)
        }
        Command::Get {
            features,
            service,
            entities,
            full_feature_names,
        } => {
            let store = FeatureStore::open(&cli.repo)?;
            let request = wire::LookupRequest {
                features,
                feature_service: service,
                entities: wire::Columns(entity_columns(&entities)?),
                full_feature_names,
                include_feature_view_version_metadata: false,
            };
            let response = lookup(&store, request).await?;
            render::online(&response, json)
        }
        Command::Drop {
            view,
            version,
            force,
        } => {
            let store = FeatureStore::open(&cli.repo)?;
            let removed = store.drop_online_version(&view, version, force).await?;
            if json {
                return render::json(
                    &serde_json::json!({ "view": view, "version": version, "removed_keys": removed }),
                );
            }
            outln!(
                "Removed {removed} online keys of {view} v{version}; its watermark is reset, so `quiver materialize-incremental {view}` refills it."
            );
            Ok(())
        }
        Command::Vacuum { retention, views } => {
            let store = FeatureStore::open(&cli.repo)?;
            let retention = retention.map(|d| d.as_micros() as i64);
            render::vacuumed(&store.vacuum(&views, retention).await?, json)
        }
        Command::Serve { bind } => {
            let store = FeatureStore::open(&cli.repo)?;
            let bind = match bind {
                Some(bind) => bind,
                None => store.config().server.bind.parse()?,
            };
            // Bind first: a busy port is an error before anything says "listening".
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            if let Err(e) = store.health().await {
                eprintln!(
                    "quiver serve: warning: the online store does not answer yet ({e}); lookups answer 503 until it does"
                );
            }
            eprintln!("quiver serve: listening on http://{bind} (ctrl-c to stop)");
            quiver_server::serve(store, listener, quiver_server::shutdown_signal())
                .await
                .with_context(|| format!("cannot serve on {bind}"))?;
            Ok(())
        }
        Command::Export {
            spine,
            spine_sql,
            features,
            service,
            out,
            full_feature_names,
            timestamp_column,
            materialize,
            show,
        } => {
            let store = FeatureStore::open(&cli.repo)?;
            let mut export = store
                .export()
                .with_features(features)
                .with_full_feature_names(full_feature_names)
                .with_timestamp_column(timestamp_column)
                .with_materialize(materialize);
            if let Some(spine) = spine {
                export = export.with_spine_file(std::path::absolute(spine)?);
            }
            if let Some(sql) = spine_sql {
                export = export.with_spine_sql(sql);
            }
            if let Some(service) = service {
                export = export.with_service(service);
            }
            let progress = render::Progress::start("exporting", json);
            let result = export.write(std::path::absolute(out)?).await;
            progress.finish();
            render::exported(&result?, show, json)
        }
        Command::Runs { kind, limit } => {
            let store = FeatureStore::open(&cli.repo)?;
            render::runs(&store.runs(kind.map(RunKind::as_str), limit).await?, json)
        }
        Command::Quickstart { dir } => quickstart(dir, json).await,
    }
}

/// Looks entities up and answers as the server does for the same request.
async fn lookup(
    store: &FeatureStore,
    mut request: wire::LookupRequest,
) -> anyhow::Result<wire::LookupResponse> {
    let plan = store
        .lookup_plan(
            &request.features,
            request.feature_service.as_deref(),
            request.full_feature_names,
        )
        .await?;
    // Type the command line's text as a client's JSON would be: keys and request fields
    // that are numbers or booleans are those, so the answer is byte for byte the
    // server's (text that does not parse stays text, and is refused with its column).
    for (name, values) in &mut request.entities.0 {
        let Some((_, data_type)) = plan.inputs().iter().find(|(input, _)| input == name) else {
            continue;
        };
        for value in values.iter_mut() {
            let Some(text) = value.as_str() else { continue };
            let typed = if data_type.is_integer() {
                text.parse::<i64>().ok().map(serde_json::Value::from)
            } else if data_type.is_floating() {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
            } else if *data_type == quiver::arrow::datatypes::DataType::Boolean {
                text.parse::<bool>().ok().map(serde_json::Value::Bool)
            } else {
                None
            };
            if let Some(typed) = typed {
                *value = typed;
            }
        }
    }
    request.entities.rows("entities")?;
    let entities = request.entities.to_batch("entities", plan.inputs())?;
    let found = store.get_online_features(&plan, &entities).await?;
    Ok(wire::lookup_response(&request, &entities, found))
}

/// `--entity driver_id=1001 --entity driver_id=1002` → `{"driver_id": ["1001", "1002"]}`.
fn entity_columns(rows: &[String]) -> anyhow::Result<Vec<(String, Vec<serde_json::Value>)>> {
    let mut columns: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mut names = Vec::new();
        for pair in row.split(',') {
            let (key, value) = pair.split_once('=').with_context(|| {
                format!(
                    "--entity {row:?}: write key=value (key=value,key2=value2 for composite keys)"
                )
            })?;
            let (key, value) = (key.trim(), value.trim());
            names.push(key.to_string());
            match columns.iter_mut().find(|(k, _)| k == key) {
                Some((_, values)) if i > 0 => values.push(value.into()),
                None if i == 0 => columns.push((key.to_string(), vec![value.into()])),
                _ => anyhow::bail!(
                    "--entity {row:?}: every --entity must name the same keys as the first"
                ),
            }
        }
        if names.len() != columns.len() {
            anyhow::bail!("--entity {row:?}: every --entity must name the same keys as the first");
        }
    }
    Ok(columns)
}

fn init(dir: &Path, json: bool) -> anyhow::Result<()> {
    quiver::example::init_repository(dir, chrono::Utc::now())?;
    if json {
        return render::json(&serde_json::json!({ "created": dir }));
    }
    outln!("Created a feature repository in {}", dir.display());
    outln!("  quiver.toml, features/*.sql, data/driver_stats.parquet, data/customer_stats.parquet");
    outln!();
    outln!("Next:");
    outln!("  cd {} && quiver plan && quiver apply", dir.display());
    Ok(())
}

/// The README's main command: init → plan → apply → materialize → export on a fresh
/// example repository.
async fn quickstart(dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => {
            let dir = std::env::temp_dir().join("quiver-quickstart");
            if dir.join("quiver.toml").exists() {
                std::fs::remove_dir_all(&dir).with_context(|| {
                    format!(
                        "cannot remove the previous quickstart folder {}",
                        dir.display()
                    )
                })?;
            }
            dir
        }
    };
    quiver::example::init_repository(&dir, chrono::Utc::now())?;
    let store = FeatureStore::open(&dir)?;
    let plan = store.plan().await?;
    let applied = store.apply().await?;
    let materialized = store.materialize(MaterializeOptions::default()).await?;
    let export = store
        .export()
        .with_spine_file("data/spine.parquet")
        .with_service("driver_ranking")
        .write("data/training_set.parquet")
        .await?;
    let request = wire::LookupRequest {
        features: Vec::new(),
        feature_service: Some("driver_ranking".to_string()),
        entities: wire::Columns(vec![
            (
                "driver_id".to_string(),
                vec![1001.into(), 1002.into(), 9999.into()],
            ),
            (
                "customer_id".to_string(),
                vec![10001.into(), 10002.into(), 10003.into()],
            ),
        ]),
        full_feature_names: false,
        include_feature_view_version_metadata: false,
    };
    let online = lookup(&store, request).await?;
    // The on-demand view: request fields travel beside the keys.
    let pricing_request = wire::LookupRequest {
        features: Vec::new(),
        feature_service: Some("ride_pricing".to_string()),
        entities: wire::Columns(vec![
            ("driver_id".to_string(), vec![1001.into()]),
            ("customer_id".to_string(), vec![10001.into()]),
            ("fare_estimate".to_string(), vec![42.5.into()]),
            ("distance_km".to_string(), vec![12.0.into()]),
        ]),
        full_feature_names: false,
        include_feature_view_version_metadata: false,
    };
    let pricing = lookup(&store, pricing_request).await?;
    if json {
        return render::json(&serde_json::json!({
            "repository": dir,
            "plan": plan,
            "applied": applied,
            "materialized": materialized,
            "export": export.summary,
            "online": online,
            "pricing": pricing,
        }));
    }
    outln!("== quiver init {}", dir.display());
    outln!("\n== quiver plan");
    render::plan(&store, &plan, false, false)?;
    outln!("\n== quiver apply");
    render::plan(&store, &applied, true, false)?;
    outln!("\n== quiver materialize");
    render::materialized(&materialized, false)?;
    outln!(
        "\n== quiver export --spine data/spine.parquet --service driver_ranking --out data/training_set.parquet"
    );
    render::exported(&export, 5, false)?;
    outln!(
        "\n== quiver get --service driver_ranking --entity driver_id=1001,customer_id=10001 (and two more)"
    );
    render::online(&online, false)?;
    outln!(
        "\n== quiver get --service ride_pricing --entity driver_id=1001,customer_id=10001,fare_estimate=42.5,distance_km=12"
    );
    render::online(&pricing, false)?;
    outln!(
        "\nThe repository is in {}; try `quiver --repo {} describe driver_hourly_stats`.",
        dir.display(),
        dir.display()
    );
    Ok(())
}
