//! Text and JSON output of every command. Text is for people (aligned, short); JSON is
//! for scripts (complete, stable field names).

use std::fmt::Write as _;

use quiver::model::Object;
use quiver::{Action, FeatureStore, HistoryEntry, ObjectRecord, Plan};
use serde::Serialize;

/// `println!` that returns the error instead of panicking, so a closed pipe
/// (`quiver export --show 5 | head -1`) ends the command quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(anstream::stdout(), $($arg)*)?
    }};
}

/// Styles for people on a terminal; `anstream` drops them when the output is not a
/// terminal or `NO_COLOR` is set.
pub mod style {
    use anstyle::{AnsiColor, Style};

    pub const ERROR: Style = AnsiColor::Red.on_default().bold();
    pub const HINT: Style = AnsiColor::Cyan.on_default();
    pub const ADDED: Style = AnsiColor::Green.on_default();
    pub const CHANGED: Style = AnsiColor::Yellow.on_default();
    pub const REMOVED: Style = AnsiColor::Red.on_default();
}
pub(crate) use outln;

pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints an error to stderr: diagnostics as they render, anything else as `error: …`.
pub fn error(error: &anyhow::Error, as_json: bool) {
    let quiver_error = error.downcast_ref::<quiver::Error>();
    if as_json {
        // A request the wire layer refused (a value of the wrong type) is the caller's.
        let kind = match (
            quiver_error,
            error.downcast_ref::<quiver_server::wire::WireError>(),
        ) {
            (Some(e), _) => e.kind(),
            (None, Some(_)) => quiver::ErrorKind::InvalidArgument,
            (None, None) => quiver::ErrorKind::Internal,
        };
        let mut body = serde_json::json!({ "error": error.to_string(), "kind": kind });
        if let Some(quiver::Error::Core(quiver_core::Error::InvalidDefinitions(d))) = quiver_error {
            body["diagnostics"] = serde_json::to_value(d).unwrap_or_default();
        }
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_else(|_| error.to_string())
        );
        return;
    }
    match quiver_error {
        Some(quiver::Error::Core(quiver_core::Error::InvalidDefinitions(d))) => {
            anstream::eprintln!("{d}")
        }
        _ => {
            let (e, h) = (style::ERROR, style::HINT);
            let mut text = format!("{e}error:{e:#} {error}");
            for cause in error.chain().skip(1) {
                let _ = write!(text, "\n  caused by: {cause}");
            }
            if let Some(hint) = quiver_error.and_then(flag_hint) {
                let _ = write!(text, "\n  {h}hint:{h:#} {hint}");
            }
            anstream::eprintln!("{text}");
        }
    }
}

/// The command-line flag that fixes a library error (the library speaks of request
/// fields; flags are this binary's business).
fn flag_hint(error: &quiver::Error) -> Option<&'static str> {
    use quiver::Error as E;
    Some(match error {
        E::DuplicateFeatureName {
            full_names: false, ..
        }
        | E::FeatureNameClashesWithSpine { .. } => "pass --full-feature-names",
        E::OfflineTableIncomplete { .. } => "or pass --materialize to run it as part of the export",
        E::NoFeaturesRequested => "pass --features view:feature,… or --service NAME",
        E::NoSpine => "pass --spine FILE or --spine-sql QUERY",
        E::DropServingVersion { .. } => "pass --force to drop it anyway",
        E::EmptyInterval { .. } => "--start must not be after --end",
        E::Offline(e) if e.to_string().contains("no timestamp column") => {
            "pass --timestamp-column NAME"
        }
        _ => return None,
    })
}

/// Whether the error is stdout closing under us (`quiver … | head -1`): not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn plan(store: &FeatureStore, plan: &Plan, applied: bool, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&serde_json::json!({
            "project": store.config().project,
            "applied": applied,
            "changes": plan.changes.iter().map(|c| serde_json::json!({
                "kind": c.kind,
                "name": c.name,
                "action": c.action.name(),
                "version": c.action.version(),
                "from_version": match c.action { Action::NewVersion { from, .. } => Some(from), _ => None },
                "fields": c.fields,
            })).collect::<Vec<_>>(),
            "unchanged": plan.unchanged,
        }));
    }
    let project = &store.config().project;
    if plan.is_empty() {
        outln!(
            "No changes: the registry of project `{project}` is up to date ({} objects).",
            plan.unchanged
        );
        return Ok(());
    }
    outln!(
        "{} for project `{project}`:",
        if applied { "Applied" } else { "Plan" }
    );
    let width = plan
        .changes
        .iter()
        .map(|c| c.kind.to_string().len() + c.name.len() + 1)
        .max()
        .unwrap_or(0);
    for change in &plan.changes {
        let (sign, sign_style, what) = match change.action {
            Action::Add { version } => ('+', style::ADDED, format!("new, v{version}")),
            Action::NewVersion { from, to } => ('~', style::CHANGED, format!("v{from} -> v{to}")),
            Action::UpdateMetadata { version } => {
                ('~', style::CHANGED, format!("v{version}, metadata only"))
            }
            Action::Remove { version } => ('-', style::REMOVED, format!("removed, was v{version}")),
            Action::Restore { version } => ('+', style::ADDED, format!("restored, v{version}")),
        };
        let label = format!("{} {}", change.kind, change.name);
        let fields: Vec<&str> = change
            .fields
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "normalized_query")
            .collect();
        let fields = if fields.is_empty() {
            String::new()
        } else {
            format!("  ({})", fields.join(", "))
        };
        // A new version of an online view serves only once it is materialized; until
        // then lookups read the previous version.
        let serving = match (&change.action, &change.definition) {
            (Action::NewVersion { from, .. }, Object::FeatureView(view)) if view.view.online => {
                format!(
                    "; lookups read v{from} until `quiver materialize {}`",
                    change.name
                )
            }
            _ => String::new(),
        };
        outln!("  {sign_style}{sign}{sign_style:#} {label:<width$}  {what}{fields}{serving}");
    }
    let counts = [
        (plan.count("added"), "added"),
        (plan.count("new_version"), "new version"),
        (plan.count("metadata"), "metadata only"),
        (plan.count("removed"), "removed"),
        (plan.count("restored"), "restored"),
    ];
    let summary: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| match (*n, *what) {
            (1, _) | (_, "added" | "metadata only" | "removed" | "restored") => {
                format!("{n} {what}")
            }
            _ => format!("{n} {what}s"),
        })
        .collect();
    outln!("{}; {} unchanged.", summary.join(", "), plan.unchanged);
    if !applied {
        outln!("Run `quiver apply` to record these changes.");
    }
    Ok(())
}

pub fn list(records: &[ObjectRecord], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "kind": r.kind, "name": r.name, "version": r.version,
                    "content_hash": r.content_hash, "updated_at": r.updated_at,
                })
            })
            .collect();
        return json(&rows);
    }
    if records.is_empty() {
        outln!("The registry is empty: run `quiver apply`.");
        return Ok(());
    }
    let rows: Vec<[String; 4]> = records
        .iter()
        .map(|r| {
            [
                r.kind.to_string(),
                r.name.clone(),
                format!("v{}", r.version),
                r.updated_at.clone(),
            ]
        })
        .collect();
    print_table(["KIND", "NAME", "VERSION", "UPDATED"], &rows)?;
    Ok(())
}

/// One object; for a feature view, `serving` is the version lookups read.
pub fn describe(record: &ObjectRecord, serving: Option<u32>, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let mut value = serde_json::to_value(record)?;
        if let Some(serving) = serving {
            value["serving_version"] = serving.into();
        }
        return json(&value);
    }
    let status = if record.deleted { ", removed" } else { "" };
    outln!(
        "{} {} (v{}{status}, hash {})",
        record.kind,
        record.name,
        record.version,
        &record.content_hash[..12.min(record.content_hash.len())]
    );
    let mut lines: Vec<(&str, String)> = Vec::new();
    match &record.definition {
        Object::Entity(e) => {
            let keys: Vec<String> = e
                .keys
                .iter()
                .map(|k| format!("{} {}", k.name, k.key_type.sql_name()))
                .collect();
            lines.push(("keys", keys.join(", ")));
            push_opt(&mut lines, "comment", &e.comment);
        }
        Object::Source(s) => {
            lines.push(("path", s.path.clone()));
            lines.push(("format", s.format.as_str().to_string()));
            lines.push(("timestamp", s.timestamp.clone()));
            push_opt(&mut lines, "created", &s.created);
            if !s.options.is_empty() {
                let options: Vec<String> =
                    s.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
                lines.push(("options", options.join(", ")));
            }
            push_opt(&mut lines, "comment", &s.comment);
        }
        Object::RequestSource(s) => {
            let fields: Vec<String> = s
                .fields
                .iter()
                .map(|f| format!("{} {}", f.name, f.data_type))
                .collect();
            lines.push(("fields", fields.join(", ")));
            push_opt(&mut lines, "comment", &s.comment);
        }
        Object::FeatureView(v) => {
            if let Some(serving) = serving {
                let note = if serving == record.version {
                    format!("v{serving}")
                } else {
                    format!(
                        "v{serving} (v{} serves once `quiver materialize {}` has run)",
                        record.version, record.name
                    )
                };
                lines.push(("serving", note));
            }
            lines.push(("entities", v.view.entities.join(", ")));
            if let Some(on_demand) = &v.schema.on_demand {
                let inputs: Vec<String> = on_demand
                    .inputs
                    .iter()
                    .map(|i| {
                        let columns: Vec<&str> =
                            i.columns.iter().map(|c| c.name.as_str()).collect();
                        let kind = match i.kind {
                            quiver::model::OnDemandInputKind::Request => "request",
                            quiver::model::OnDemandInputKind::View => "view",
                        };
                        format!("{} ({kind}: {})", i.name, columns.join(", "))
                    })
                    .collect();
                lines.push(("on demand", inputs.join("; ")));
            } else if v.view.is_windowed() {
                let windows: Vec<String> = v
                    .view
                    .windows
                    .iter()
                    .map(|w| {
                        format!(
                            "{} (hop {})",
                            quiver::model::Ttl::from_seconds(*w),
                            quiver::model::Ttl::from_seconds(v.view.hop_of(*w))
                        )
                    })
                    .collect();
                lines.push(("windows", windows.join(", ")));
            } else {
                lines.push((
                    "ttl",
                    v.view
                        .ttl
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "none (values never expire)".into()),
                ));
            }
            if v.schema.on_demand.is_none() {
                lines.push(("online", v.view.online.to_string()));
            }
            push_opt(&mut lines, "owner", &v.view.owner);
            if !v.view.tags.is_empty() {
                let tags: Vec<String> = v
                    .view
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                lines.push(("tags", tags.join(", ")));
            }
            push_opt(&mut lines, "comment", &v.view.comment);
            if v.schema.on_demand.is_none() {
                lines.push(("sources", v.view.sources.join(", ")));
            }
            let keys: Vec<String> = v
                .schema
                .keys
                .iter()
                .map(|c| format!("{} {}", c.name, c.data_type))
                .collect();
            lines.push(("keys", keys.join(", ")));
            if let Some(t) = &v.schema.timestamp {
                lines.push(("timestamp", format!("{} {}", t.name, t.data_type)));
            }
            if let Some(c) = &v.schema.created {
                lines.push(("created", format!("{} {}", c.name, c.data_type)));
            }
        }
        Object::FeatureService(s) => {
            let features: Vec<String> = s.features.iter().map(|f| f.to_string()).collect();
            lines.push(("features", features.join(", ")));
            push_opt(&mut lines, "comment", &s.comment);
        }
    }
    lines.push(("first applied", record.created_at.clone()));
    lines.push(("last changed", record.updated_at.clone()));
    for (label, value) in lines {
        outln!("  {:<14} {value}", format!("{label}:"));
    }
    if let Object::FeatureView(v) = &record.definition {
        outln!("  features:");
        let width = v
            .schema
            .features
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &v.schema.features {
            outln!("    {:<width$}  {}", c.name, c.data_type);
        }
        outln!("  query:");
        for line in v.view.query.lines() {
            outln!("    {line}");
        }
    }
    Ok(())
}

fn push_opt(lines: &mut Vec<(&str, String)>, label: &'static str, value: &Option<String>) {
    if let Some(value) = value {
        lines.push((label, value.clone()));
    }
}

pub fn history(entries: &[HistoryEntry], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&entries);
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let fields: Vec<&str> = e
                .fields
                .iter()
                .map(String::as_str)
                .filter(|f| *f != "normalized_query")
                .collect();
            [
                e.applied_at.clone(),
                e.kind.to_string(),
                format!("v{}", e.version),
                e.action.clone(),
                fields.join(", "),
            ]
        })
        .collect();
    print_table(["APPLIED", "KIND", "VERSION", "ACTION", "FIELDS"], &rows)?;
    Ok(())
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> anyhow::Result<()> {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        outln!("{}", out.trim_end());
        Ok(())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// A spinner on stderr while long work runs, only when stderr is a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn start(message: &'static str, json: bool) -> Self {
        use std::io::IsTerminal;
        if json || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(message);
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        Progress(Some(bar))
    }

    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

pub fn materialized(reports: &[quiver::MaterializeReport], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&reports);
    }
    if reports.is_empty() {
        outln!("Every view is up to date.");
    }
    for report in reports {
        let s = &report.offline;
        let start = s.interval.start.map_or("the beginning".to_string(), time);
        let rate = if s.seconds > 0.0 {
            s.rows_in_interval as f64 / s.seconds
        } else {
            0.0
        };
        outln!(
            "{} v{}: {} rows from {start} to {} -> {} files in {} partitions; table has {} rows ({:.2} s, {:.0} rows/s)",
            s.view,
            s.version,
            s.rows_in_interval,
            time(s.interval.end),
            s.files_written,
            s.partitions_rewritten,
            s.table_rows,
            s.seconds,
            rate
        );
        if let Some(online) = &report.online {
            outln!(
                "  online ({}): {} entities, {} keys written ({:.2} s)",
                online.store,
                online.rows,
                online.written,
                online.seconds
            );
        }
    }
    Ok(())
}

pub fn online(response: &quiver_server::wire::LookupResponse, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        // Compact, exactly as the server answers the same request.
        outln!("{}", serde_json::to_string(response)?);
        return Ok(());
    }
    let names: Vec<&str> = response.feature_names().collect();
    let entity_columns = response.entity_columns();
    let mut table: Vec<[String; 5]> = Vec::new();
    for row in 0..response.rows() {
        let entity: Vec<String> = (0..entity_columns)
            .map(|c| format!("{}={}", names[c], plain(&response.cell(c, row).0)))
            .collect();
        for (result, name) in names.iter().enumerate().skip(entity_columns) {
            let (value, status, event_timestamp) = response.cell(result, row);
            table.push([
                entity.join(","),
                name.to_string(),
                plain(&value),
                serde_json::to_value(status)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                event_timestamp.to_string(),
            ]);
        }
    }
    print_table(
        ["ENTITY", "FEATURE", "VALUE", "STATUS", "EVENT_TIMESTAMP"],
        &table,
    )?;
    Ok(())
}

pub fn vacuumed(reports: &[quiver::VacuumReport], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&reports);
    }
    for report in reports {
        outln!(
            "{} v{}: removed {} superseded and {} orphaned files; {} superseded files kept for readers",
            report.view,
            report.version,
            report.stats.superseded_removed,
            report.stats.orphans_removed,
            report.stats.superseded_kept
        );
    }
    Ok(())
}

fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

pub fn exported(export: &quiver::Export, show: usize, as_json: bool) -> anyhow::Result<()> {
    let s = &export.summary;
    if as_json {
        return json(s);
    }
    for m in &s.materialized {
        outln!(
            "materialized {} v{} ({} rows) first",
            m.view,
            m.version,
            m.rows_in_interval
        );
    }
    let output = s
        .output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    outln!(
        "Wrote {} rows x {} columns to {output} (views {}) in {:.2} s",
        s.rows,
        export.batch.num_columns(),
        s.views.join(", "),
        s.seconds
    );
    if show > 0 {
        outln!("{}", quiver::pretty(&export.batch, show)?);
    }
    Ok(())
}

pub fn runs(runs: &[quiver::RunRecord], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&runs);
    }
    let rows: Vec<[String; 4]> = runs
        .iter()
        .map(|r| {
            let what = match r.kind.as_str() {
                "materialize" => format!(
                    "{} v{}: {} rows",
                    r.details["view"].as_str().unwrap_or("?"),
                    r.details["version"],
                    r.details["rows_in_interval"]
                ),
                _ => format!(
                    "{} rows from {} -> {}",
                    r.details["rows"],
                    r.details["views"]
                        .as_array()
                        .map(|v| v
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default(),
                    r.details["output"].as_str().unwrap_or("(in memory)")
                ),
            };
            [
                r.id.to_string(),
                r.kind.clone(),
                r.finished_at.clone(),
                what,
            ]
        })
        .collect();
    print_table(["ID", "KIND", "FINISHED", "WHAT"], &rows)?;
    Ok(())
}

fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::flag_hint;

    /// The library's messages never name this binary's flags; the CLI adds the flag that
    /// fixes the error as a hint.
    #[test]
    fn library_errors_speak_of_fields_and_the_cli_adds_flags() {
        let cases = [
            (quiver::Error::NoFeaturesRequested, "--features"),
            (quiver::Error::NoSpine, "--spine"),
        ];
        for (error, flag) in cases {
            let message = error.to_string();
            assert!(!message.contains("--"), "{message}");
            assert!(
                flag_hint(&error).is_some_and(|hint| hint.contains(flag)),
                "{message}"
            );
        }
    }
}
