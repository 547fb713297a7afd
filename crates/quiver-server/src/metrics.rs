//! Prometheus metrics, kept in memory and rendered as text by `GET /metrics`: requests
//! and latency per endpoint and status, entity rows per lookup, lookup latency, errors,
//! and per-view feature freshness.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        for (bucket, count) in BUCKETS.iter().zip(&mut self.counts) {
            if value <= *bucket {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bucket}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per matched route (`unmatched` for the rest).
    endpoints: BTreeMap<String, Endpoint>,
    entities: Histogram,
    lookup: Histogram,
}

#[derive(Debug, Default)]
struct Endpoint {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    errors: u64,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lookup(&self, entities: usize, seconds: f64) {
        let mut inner = self.lock();
        inner.entities.observe(entities as f64);
        inner.lookup.observe(seconds);
    }

    /// The Prometheus text, with per-view freshness (seconds since the watermark).
    pub fn render(&self, freshness: &[(String, Option<f64>)]) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str("# HELP quiver_http_requests_total HTTP requests by endpoint and status.\n# TYPE quiver_http_requests_total counter\n");
        for (endpoint, stats) in &inner.endpoints {
            for (status, n) in &stats.requests {
                let _ = writeln!(
                    out,
                    "quiver_http_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                    label(endpoint)
                );
            }
        }
        out.push_str("# HELP quiver_http_request_duration_seconds HTTP request latency by endpoint.\n# TYPE quiver_http_request_duration_seconds histogram\n");
        for (endpoint, stats) in &inner.endpoints {
            stats.latency.render(
                &mut out,
                "quiver_http_request_duration_seconds",
                &format!("endpoint=\"{}\"", label(endpoint)),
            );
        }
        out.push_str("# HELP quiver_http_errors_total Responses with a 4xx or 5xx status by endpoint.\n# TYPE quiver_http_errors_total counter\n");
        for (endpoint, stats) in inner.endpoints.iter().filter(|(_, s)| s.errors > 0) {
            let _ = writeln!(
                out,
                "quiver_http_errors_total{{endpoint=\"{}\"}} {}",
                label(endpoint),
                stats.errors
            );
        }
        out.push_str("# HELP quiver_lookup_entities Entity rows per lookup.\n# TYPE quiver_lookup_entities histogram\n");
        inner
            .entities
            .render(&mut out, "quiver_lookup_entities", "");
        out.push_str("# HELP quiver_online_store_seconds Online lookup latency (registry cache and store).\n# TYPE quiver_online_store_seconds histogram\n");
        inner
            .lookup
            .render(&mut out, "quiver_online_store_seconds", "");
        out.push_str("# HELP quiver_feature_freshness_seconds Seconds since the end of the view's last materialization.\n# TYPE quiver_feature_freshness_seconds gauge\n");
        for (view, seconds) in freshness {
            if let Some(seconds) = seconds {
                let _ = writeln!(
                    out,
                    "quiver_feature_freshness_seconds{{view=\"{}\"}} {seconds}",
                    label(view)
                );
            }
        }
        out
    }
}

/// A Prometheus label value, escaped (`\\`, `"` and newlines), so no name can break the
/// exposition format.
pub fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Middleware: count and time every request under its matched route.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A cheap clone (the route is shared); no allocation per request once seen.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    let endpoint = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let mut inner = state.metrics.lock();
    if !inner.endpoints.contains_key(endpoint) {
        inner
            .endpoints
            .insert(endpoint.to_string(), Endpoint::default());
    }
    let stats = inner
        .endpoints
        .get_mut(endpoint)
        .expect("inserted above when missing");
    *stats.requests.entry(status).or_default() += 1;
    stats.latency.observe(seconds);
    if status >= 400 {
        stats.errors += 1;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_cannot_break_the_format() {
        assert_eq!(label(r#"it's "quoted""#), r#"it's \"quoted\""#);
        assert_eq!(label("a\\b\nc"), r"a\\b\nc");
    }
}
