//! Runs every windowed-aggregation case in `tests/windows/*.case` through the whole
//! pipeline: definitions → apply → materialize → export, and (for cases with
//! `-- online AT`) the online lookup at that time.
//!
//! ```text
//! # what the case checks
//! -- events                                   <- the source rows, as CSV (user_id key)
//! user_id,event_timestamp,amount
//! 1,2026-01-01T00:00:00Z,10
//! -- view                                     <- the view's clauses after ENTITY user
//! WINDOWS ('1 hour') AS SELECT user_id, COUNT(*) AS n FROM events GROUP BY user_id
//! -- spine                                    <- the spine, as CSV
//! user_id,event_timestamp
//! 1,2026-01-01T01:00:00Z
//! -- expected                                 <- the training set, or the definition error
//! user_id,event_timestamp,n_1h
//! 1,2026-01-01T01:00:00Z,1
//! ```
//!
//! The entity is `user (user_id BIGINT)`, the source `events` (CSV, `CREATED created`
//! when the rows have a `created` column); the export asks for every feature of the
//! view. `QUIVER_BLESS=1` rewrites the expected sections.

use std::path::Path;
use std::sync::Arc;

use quiver::clock::FixedClock;

/// The sections of a case file the runner reads.
struct Case {
    events: String,
    view: String,
    spine: String,
    /// Optional: a time at which the online lookup of every spine key must equal the
    /// export at that time.
    online_at: Option<String>,
}

fn parse(path: &Path) -> Case {
    let mut sections = crate::support::sections(path);
    let mut take = |name: &str| sections.remove(name).unwrap_or_default();
    Case {
        events: take("events"),
        view: take("view"),
        spine: take("spine"),
        online_at: sections.remove("online"),
    }
}

fn run(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("quiver.toml"), "project = \"windows\"\n").unwrap();
    std::fs::create_dir_all(root.join("features")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let created = case
        .events
        .lines()
        .next()
        .unwrap_or("")
        .split(',')
        .any(|c| c == "created");
    std::fs::write(
        root.join("features/defs.sql"),
        format!(
            "CREATE ENTITY user (user_id BIGINT);\n\
             CREATE SOURCE events FROM 'data/events.csv' TIMESTAMP event_timestamp{};\n\
             CREATE FEATURE VIEW v ENTITY user {};\n",
            if created { " CREATED created" } else { "" },
            case.view.trim().trim_end_matches(';')
        ),
    )
    .unwrap();
    std::fs::write(root.join("data/events.csv"), &case.events).unwrap();
    std::fs::write(root.join("spine.csv"), &case.spine).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            let mut store = quiver::FeatureStore::open(root)?;
            let online_at = case.online_at.as_ref().map(|at| {
                chrono::DateTime::parse_from_rfc3339(at)
                    .unwrap()
                    .with_timezone(&chrono::Utc)
            });
            if let Some(at) = online_at {
                store = store.with_clock(Arc::new(FixedClock(at)));
            }
            store.apply().await?;
            let export = store
                .export()
                .with_spine_file("spine.csv")
                .with_features(["v:*"])
                .with_materialize(true)
                .execute()
                .await?;
            let mut out = crate::support::render(&export.batch);
            if let Some(at) = online_at {
                store
                    .materialize(quiver::MaterializeOptions {
                        views: vec!["v".into()],
                        ..Default::default()
                    })
                    .await?;
                let keys = export.batch.project(&[0]).unwrap();
                let features = ["v:*".to_string()];
                out.push_str(
                    &crate::support::online_equals_export(
                        &store,
                        &export.batch,
                        at,
                        &keys,
                        &features,
                    )
                    .await?,
                );
            }
            Ok::<_, quiver::Error>(out)
        })
        .unwrap_or_else(|e| format!("error: {e}\n"))
}

#[test]
fn windowed_aggregation_cases() {
    crate::support::check_cases("windows", 12, |path| run(&parse(path)));
}
