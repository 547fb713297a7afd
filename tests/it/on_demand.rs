//! Runs every on-demand case in `tests/on_demand/*.case` through the whole pipeline:
//! definitions → apply → export (materializing the inputs), and (for cases with
//! `-- online AT`) the online lookup of the spine rows at that time, with their request
//! values, which must equal the export.
//!
//! ```text
//! # what the case checks
//! -- events                        <- the source `events` (CSV): user_id, event_timestamp, …
//! user_id,event_timestamp,amount
//! 1,2026-01-01T00:00:00Z,10
//! -- request                       <- the fields of request source `req`
//! (price DOUBLE)
//! -- view                          <- the query of on-demand view `od`
//! SELECT req.price / profile.amount AS ratio FROM req, profile
//! -- spine                         <- the spine (CSV): keys, time, request fields
//! user_id,event_timestamp,price
//! 1,2026-01-01T01:00:00Z,5
//! -- expected                      <- the training set, or the definition error
//! user_id,event_timestamp,price,ratio
//! 1,2026-01-01T01:00:00Z,5.0,0.5
//! ```
//!
//! Every case has the entity `user (user_id BIGINT)`, the row view `profile` (every
//! column of `events` as a feature, no TTL) and the aggregation view `spend` (`COUNT(*) AS
//! n, SUM(amount) AS total` over `WINDOWS ('1 day')`). `QUIVER_BLESS=1` rewrites the
//! expected sections.

use std::path::Path;
use std::sync::Arc;

use quiver::clock::FixedClock;

fn run(path: &Path) -> String {
    let sections = crate::support::sections(path);
    let section = |name: &str| sections.get(name).cloned().unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("quiver.toml"), "project = \"on_demand\"\n").unwrap();
    std::fs::create_dir_all(root.join("features")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(
        root.join("features/defs.sql"),
        format!(
            "CREATE ENTITY user (user_id BIGINT);\n\
             CREATE SOURCE events FROM 'data/events.csv' TIMESTAMP event_timestamp;\n\
             CREATE FEATURE VIEW profile ENTITY user AS SELECT * FROM events;\n\
             CREATE FEATURE VIEW spend ENTITY user WINDOWS ('1 day')\n\
               AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id;\n\
             CREATE REQUEST SOURCE req {};\n\
             CREATE FEATURE VIEW od ON DEMAND AS\n{};\n",
            section("request").trim(),
            section("view").trim().trim_end_matches(';')
        ),
    )
    .unwrap();
    std::fs::write(root.join("data/events.csv"), section("events")).unwrap();
    std::fs::write(root.join("spine.csv"), section("spine")).unwrap();
    let online_at = sections.get("online").map(|at| {
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            let mut store = quiver::FeatureStore::open(root)?;
            if let Some(at) = online_at {
                store = store.with_clock(Arc::new(FixedClock(at)));
            }
            store.apply().await?;
            let export = store
                .export()
                .with_spine_file("spine.csv")
                .with_features(["od:*"])
                .with_materialize(true)
                .execute()
                .await?;
            let mut out = crate::support::render(&export.batch);
            if let Some(at) = online_at {
                store
                    .materialize(quiver::MaterializeOptions::default())
                    .await?;
                // The spine's keys and request fields are the lookup's entity rows.
                let spine_columns = export.batch.num_columns() - export.summary.features.len();
                let inputs: Vec<usize> = (0..spine_columns).filter(|c| *c != 1).collect();
                let entities = export.batch.project(&inputs).unwrap();
                let features = ["od:*".to_string()];
                out.push_str(
                    &crate::support::online_equals_export(
                        &store,
                        &export.batch,
                        at,
                        &entities,
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
fn on_demand_cases() {
    crate::support::check_cases("on_demand", 8, run);
}
