//! `quiver.toml`: the repository's configuration, with every key overridable from the
//! environment and a JSON Schema (checked in under `schemas/`) for editors and CI.
//!
//! ```toml
//! project = "rides"
//! definitions = ["features"]          # files or folders of *.sql, relative to this file
//! [offline]
//! path = "data/offline"
//! [online]
//! type = "embedded"                   # or "redis"
//! url = "redis://127.0.0.1:6379/0"    # used when type = "redis"
//! [server]
//! bind = "127.0.0.1:6566"
//! [registry]
//! url = "postgres://quiver@db.internal/rides"   # default: .quiver/registry.db (SQLite)
//! [storage]                           # for s3:// offline.path and sources
//! aws_endpoint_url = "http://127.0.0.1:9000"
//! ```
//!
//! Environment overrides: `QUIVER_PROJECT`, `QUIVER_DEFINITIONS` (comma-separated) and
//! `QUIVER_<SECTION>__<KEY>` such as `QUIVER_ONLINE__URL`. An override of a key that does
//! not exist is an error naming the variable.

use std::net::SocketAddr;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file name of a repository's config.
pub const CONFIG_FILE: &str = "quiver.toml";

/// The repository's state folder (registry, embedded online store).
pub const STATE_DIR: &str = ".quiver";

/// The contents of `quiver.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "quiver.toml",
    description = "Configuration of a Quiver feature repository."
)]
pub struct Config {
    /// Project name; namespaces the online keys. Letters, digits, `_` and `-`.
    pub project: String,
    /// Files or folders of `*.sql` definitions, relative to `quiver.toml`.
    #[serde(default = "default_definitions")]
    pub definitions: Vec<String>,
    /// Where offline tables are written.
    #[serde(default)]
    pub offline: OfflineConfig,
    /// The online store that serves the latest feature values.
    #[serde(default)]
    pub online: OnlineConfig,
    /// Limits on ingested event times.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The HTTP feature server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the registry lives.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// How object storage (`s3://` offline tables and sources) is reached.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[storage]`: how `s3://` locations (`offline.path`, `CREATE SOURCE … FROM`) are
/// reached. Each key overrides the standard AWS environment variable of the same name
/// in capitals (`aws_region` ↔ `AWS_REGION`); unset keys come from the environment.
/// Prefer the environment for secrets. Values are never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub aws_access_key_id: Option<String>,
    /// The secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub aws_secret_access_key: Option<String>,
    /// A session token for temporary credentials (`AWS_SESSION_TOKEN`).
    pub aws_session_token: Option<String>,
    /// The bucket's region (`AWS_REGION`; default `us-east-1`).
    pub aws_region: Option<String>,
    /// The endpoint of an S3-compatible store such as MinIO, Ceph or R2
    /// (`AWS_ENDPOINT_URL`); requests use path-style addressing.
    pub aws_endpoint_url: Option<String>,
    /// Allow an `http://` endpoint (`AWS_ALLOW_HTTP`); only for stores on a trusted network.
    pub aws_allow_http: Option<bool>,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<&str> = self.settings().into_iter().map(|(k, _)| k).collect();
        f.debug_struct("StorageConfig").field("set", &set).finish()
    }
}

impl StorageConfig {
    /// The keys that are set and their values, by their AWS names in lower case.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let allow_http = self.aws_allow_http.map(|b| b.to_string());
        [
            ("aws_access_key_id", self.aws_access_key_id.clone()),
            ("aws_secret_access_key", self.aws_secret_access_key.clone()),
            ("aws_session_token", self.aws_session_token.clone()),
            ("aws_region", self.aws_region.clone()),
            ("aws_endpoint_url", self.aws_endpoint_url.clone()),
            ("aws_allow_http", allow_http),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect()
    }
}

/// `[registry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// A PostgreSQL database shared by every checkout and feature server of the project,
    /// `postgres://user[:password]@host[:port]/database` (libpq's URL form; no TLS).
    /// Unset: `.quiver/registry.db`, a SQLite file in this checkout. Prefer the
    /// environment for a password: `QUIVER_REGISTRY__URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn default_definitions() -> Vec<String> {
    vec!["features".to_string()]
}

/// `[offline]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// Folder of the offline tables, relative to `quiver.toml` (or absolute).
    #[serde(default = "default_offline_path")]
    pub path: String,
    /// How long files replaced by a materialization or push stay readable for exports
    /// that started before (a duration such as "1 hour"); `quiver vacuum` removes them
    /// earlier.
    #[serde(default = "default_retention")]
    pub retention: String,
}

fn default_offline_path() -> String {
    "data/offline".to_string()
}

fn default_retention() -> String {
    "1 hour".to_string()
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            path: default_offline_path(),
            retention: default_retention(),
        }
    }
}

/// `[ingest]`: limits on the data that materialization and push take in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// How far in the future an event time may lie (a duration such as "1 day"): a push
    /// with a later event time is refused, materialization skips (and counts) such rows,
    /// so a wrong clock cannot pin an entity's value forever.
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew: String,
}

fn default_max_future_skew() -> String {
    "1 day".to_string()
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew: default_max_future_skew(),
        }
    }
}

/// Which online store implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStoreType {
    /// SQLite in `.quiver/`: no server needed.
    #[default]
    Embedded,
    /// Redis at `online.url`.
    Redis,
    /// A Redis Cluster, found through the seed nodes in `online.urls`.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

/// `[online]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// `embedded` (default), `redis` or `redis-cluster`.
    #[serde(default, rename = "type")]
    pub store_type: OnlineStoreType,
    /// Redis URL (`redis://[user:password@]host:port/db`, `rediss://` for TLS); required
    /// when `type = "redis"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Redis Cluster: seed nodes (`redis://[user:password@]host:port`, `rediss://` for
    /// TLS), any of the cluster's nodes; required when `type = "redis-cluster"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// TLS (`rediss://`): a PEM file of the certificate authority that signed the
    /// servers' certificates, relative to `quiver.toml`. Default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// TLS: a PEM client certificate to present, for servers that require one
    /// (`tls-auth-clients yes`); needs `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// TLS: the PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Redis: how long to wait for a connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Redis: how long to wait for a command's answer, in milliseconds.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_command_timeout_ms() -> u64 {
    5_000
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            store_type: OnlineStoreType::default(),
            url: None,
            urls: Vec::new(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            command_timeout_ms: default_command_timeout_ms(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most entity rows in one lookup.
    #[serde(default = "default_max_entities")]
    pub max_entities: u64,
    /// Longest a request may run, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest a client may take to send a request's headers, from their first byte (or
    /// from the connection's start for its first request), in milliseconds.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request's body, in milliseconds.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// A kept-alive connection idle this long is closed, in milliseconds.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most connections served at once; more wait in the kernel's backlog. Keep it below
    /// the process's open-file limit (`ulimit -n`).
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// On shutdown, how long requests in flight get to finish, in milliseconds.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// When set, `POST /push` and `POST /materialize*` require it (header `x-api-key` or
    /// `Authorization: Bearer …`). Prefer the environment: `QUIVER_SERVER__API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_body_read_timeout_ms() -> u64 {
    10_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_connections() -> u64 {
    1_000
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

fn default_max_body_bytes() -> u64 {
    8 * 1024 * 1024
}

fn default_max_entities() -> u64 {
    10_000
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_bind() -> String {
    "127.0.0.1:6566".to_string()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: default_bind(),
            max_body_bytes: default_max_body_bytes(),
            max_entities: default_max_entities(),
            request_timeout_ms: default_request_timeout_ms(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            api_key: None,
        }
    }
}

impl Config {
    /// Reads `quiver.toml` from `repo_root` and applies the process environment.
    pub fn load(repo_root: &Path) -> Result<Config> {
        Config::load_with_env(repo_root, std::env::vars())
    }

    /// Reads `quiver.toml` from `repo_root` and applies the given environment variables.
    pub fn load_with_env(
        repo_root: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let path = repo_root.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::InvalidConfig {
            path: path.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("no {CONFIG_FILE} here; run `quiver init DIR` to create a repository, or pass --repo DIR")
            } else {
                e.to_string()
            },
        })?;
        Config::parse_with_env(&path, &text, env)
    }

    /// Parses config text (`path` is only used in messages).
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let invalid = |message: String| Error::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        let mut overridden = Vec::new();
        for (name, value) in env {
            if let Some(key) = override_key(&name) {
                apply_override(&mut table, &name, &key, &value).map_err(invalid)?;
                overridden.push(name);
            }
        }
        let config: Config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            let mut message = e.to_string().trim_end().to_string();
            if !overridden.is_empty() {
                overridden.sort();
                message.push_str(&format!(
                    " (environment overrides in effect: {})",
                    overridden.join(", ")
                ));
            }
            invalid(message)
        })?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.project.is_empty()
            || !self
                .project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "`project` must be letters, digits, `_` or `-`, not {:?}",
                self.project
            ));
        }
        if self.definitions.is_empty() {
            return Err("`definitions` must name at least one file or folder of *.sql".into());
        }
        if self.offline.path.is_empty() {
            return Err("`offline.path` must not be empty".into());
        }
        if let Some((scheme, rest)) = self.offline.path.split_once("://") {
            if !matches!(scheme, "s3" | "s3a") {
                return Err(format!(
                    "`offline.path` {:?}: only local folders and s3://bucket/prefix URLs are supported",
                    self.offline.path
                ));
            }
            if rest.split('/').next().is_none_or(str::is_empty) {
                return Err(format!(
                    "`offline.path` {:?} names no bucket: write s3://bucket/prefix",
                    self.offline.path
                ));
            }
        }
        for (key, value) in [
            ("offline.retention", &self.offline.retention),
            ("ingest.max_future_skew", &self.ingest.max_future_skew),
        ] {
            crate::model::parse_duration(value).map_err(|e| {
                format!(
                    "`{key}` must be a duration such as \"1 hour\" or \"0s\", not {value:?}: {e}"
                )
            })?;
        }
        self.check_online()?;
        if let Some(url) = &self.registry.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!(
                    "`registry.url` must start with postgres:// or postgresql://, not {:?} (leave it out for the SQLite registry in .quiver/)",
                    redact_url(url)
                ));
            }
            if let Err(e) = url.parse::<postgres::Config>() {
                return Err(format!(
                    "`registry.url` {:?} is not a PostgreSQL URL: {e}",
                    redact_url(url)
                ));
            }
        }
        if self.online.connect_timeout_ms == 0 || self.online.command_timeout_ms == 0 {
            return Err(
                "`online.connect_timeout_ms` and `online.command_timeout_ms` must be positive"
                    .into(),
            );
        }
        let server = &self.server;
        for (key, value) in [
            ("server.max_body_bytes", server.max_body_bytes),
            ("server.max_entities", server.max_entities),
            ("server.request_timeout_ms", server.request_timeout_ms),
            (
                "server.header_read_timeout_ms",
                server.header_read_timeout_ms,
            ),
            ("server.body_read_timeout_ms", server.body_read_timeout_ms),
            ("server.idle_timeout_ms", server.idle_timeout_ms),
            ("server.max_connections", server.max_connections),
        ] {
            if value == 0 {
                return Err(format!("`{key}` must be positive"));
            }
        }
        if self.server.api_key.as_deref() == Some("") {
            return Err("`server.api_key` must not be empty (leave it out to disable it)".into());
        }
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "`server.bind` must be an address such as \"127.0.0.1:6566\", not {:?}",
                self.server.bind
            ));
        }
        Ok(())
    }

    /// Where the registry lives: `registry.url`, else the SQLite file in the state folder.
    pub fn registry_location(&self, repo_root: &Path) -> crate::registry::RegistryLocation {
        match &self.registry.url {
            Some(url) => crate::registry::RegistryLocation::Postgres { url: url.clone() },
            None => crate::registry::RegistryLocation::Sqlite {
                state_dir: repo_root.join(STATE_DIR),
            },
        }
    }

    fn check_online(&self) -> Result<(), String> {
        let online = &self.online;
        match online.store_type {
            OnlineStoreType::Redis if online.url.is_none() => {
                return Err("`online.url` is required when `online.type = \"redis\"`, e.g. \"redis://127.0.0.1:6379/0\"".into());
            }
            OnlineStoreType::RedisCluster if online.urls.is_empty() => {
                return Err("`online.urls` is required when `online.type = \"redis-cluster\"`: seed nodes such as [\"redis://10.0.0.5:6379\", \"redis://10.0.0.6:6379\"]".into());
            }
            OnlineStoreType::RedisCluster if online.url.is_some() => {
                return Err("`online.url` names one server; a cluster takes its seed nodes in `online.urls`".into());
            }
            _ => {}
        }
        let urls: Vec<(&str, &String)> = online
            .url
            .iter()
            .map(|url| ("online.url", url))
            .chain(online.urls.iter().map(|url| ("online.urls", url)))
            .collect();
        for (key, url) in &urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "`{key}` must start with redis:// or rediss://, not {:?}",
                    redact_url(url)
                ));
            }
        }
        if online.tls_cert.is_some() != online.tls_key.is_some() {
            return Err(
                "`online.tls_cert` and `online.tls_key` go together: set both or neither".into(),
            );
        }
        let tls_files = online.tls_ca.is_some() || online.tls_cert.is_some();
        if tls_files && !urls.iter().any(|(_, url)| url.starts_with("rediss://")) {
            return Err("`online.tls_ca`, `online.tls_cert` and `online.tls_key` apply to TLS: use rediss:// URLs".into());
        }
        Ok(())
    }

    /// The default config `quiver init` writes for a project.
    pub fn example(project: &str) -> Config {
        Config {
            project: project.to_string(),
            definitions: default_definitions(),
            offline: OfflineConfig::default(),
            online: OnlineConfig::default(),
            ingest: IngestConfig::default(),
            server: ServerConfig::default(),
            registry: RegistryConfig::default(),
            storage: StorageConfig::default(),
        }
    }

    /// `offline.retention` in µs.
    pub fn retention_micros(&self) -> i64 {
        duration_micros(&self.offline.retention)
    }

    /// `ingest.max_future_skew` in µs.
    pub fn max_future_skew_micros(&self) -> i64 {
        duration_micros(&self.ingest.max_future_skew)
    }
}

/// A duration key's value in µs; keys are checked when the config loads.
fn duration_micros(text: &str) -> i64 {
    crate::model::parse_duration(text).map_or(0, |s| s as i64 * 1_000_000)
}

/// A URL with its credentials hidden, for messages: `redis://user:secret@host/0` →
/// `redis://user:***@host/0`, `redis://secret@host` → `redis://***@host`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_string();
    };
    let user = match url[scheme_end..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{}{user}{}", &url[..scheme_end], &url[at..])
}

/// `QUIVER_ONLINE__URL` → `["online", "url"]`; `QUIVER_PROJECT` → `["project"]`.
/// Other `QUIVER_*` variables (CLI flags such as `QUIVER_REPO`) are not config keys.
fn override_key(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("QUIVER_")?;
    if rest.contains("__") {
        return Some(rest.split("__").map(|s| s.to_ascii_lowercase()).collect());
    }
    match rest {
        "PROJECT" | "DEFINITIONS" => Some(vec![rest.to_ascii_lowercase()]),
        _ => None,
    }
}

fn apply_override(
    table: &mut toml::Table,
    name: &str,
    key: &[String],
    value: &str,
) -> Result<(), String> {
    let schema =
        serde_json::to_value(schemars::schema_for!(Config)).expect("schemas serialize to JSON");
    let Some(property) = schema_property(&schema, key) else {
        return Err(format!(
            "environment variable {name} overrides `{}`, which is not a config key",
            key.join(".")
        ));
    };
    let value = match property.get("type").and_then(|t| t.as_str()) {
        Some("array") => toml::Value::Array(
            value
                .split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ),
        Some("integer") => toml::Value::Integer(value.parse().map_err(|_| {
            format!("environment variable {name} must be an integer, not {value:?}")
        })?),
        Some("boolean") => toml::Value::Boolean(value.parse().map_err(|_| {
            format!("environment variable {name} must be true or false, not {value:?}")
        })?),
        _ => toml::Value::String(value.to_string()),
    };
    let (last, sections) = key
        .split_last()
        .expect("override keys have at least one part");
    let mut current = table;
    for section in sections {
        current = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{section}` in quiver.toml must be a table to apply {name}"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// The JSON Schema node of a (possibly nested) key, following `$ref`s.
fn schema_property<'a>(
    schema: &'a serde_json::Value,
    key: &[String],
) -> Option<&'a serde_json::Value> {
    let mut node = schema;
    for part in key {
        node = resolve_ref(schema, node);
        node = node.get("properties")?.get(part)?;
    }
    let node = resolve_ref(schema, node);
    Some(node)
}

fn resolve_ref<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> &'a serde_json::Value {
    let target = node
        .get("$ref")
        .or_else(|| {
            node.get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|n| n.get("$ref"))
        })
        .and_then(|r| r.as_str());
    match target.and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => root.get("$defs").and_then(|d| d.get(name)).unwrap_or(node),
        None => node,
    }
}

/// The JSON Schema of `quiver.toml`, as checked in under `schemas/`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize to JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        Config::parse_with_env(
            Path::new("quiver.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let config = parse("project = \"rides\"", &[]).unwrap();
        assert_eq!(config, Config::example("rides"));
    }

    #[test]
    fn environment_overrides_keys() {
        let config = parse(
            "project = \"rides\"",
            &[
                ("QUIVER_ONLINE__TYPE", "redis"),
                ("QUIVER_ONLINE__URL", "redis://127.0.0.1:7000/1"),
                ("QUIVER_DEFINITIONS", "a, b"),
                ("QUIVER_REPO", "/ignored"),
            ],
        )
        .unwrap();
        assert_eq!(config.online.store_type, OnlineStoreType::Redis);
        assert_eq!(
            config.online.url.as_deref(),
            Some("redis://127.0.0.1:7000/1")
        );
        assert_eq!(config.definitions, vec!["a", "b"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse("project = \"rides\"\n[online]\nkind = \"redis\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `kind`"), "{err}");
        let err = parse("project = \"rides\"", &[("QUIVER_ONLINE__PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("QUIVER_ONLINE__PORT overrides `online.port`, which is not a config key"),
            "{err}"
        );
        let err = parse("project = \"rides\"\n[online]\ntype = \"redis\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`online.url` is required"), "{err}");
        let err = parse("project = \"rides\"\n[server]\nbind = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.bind`"), "{err}");
        let err = parse("project = \"rides\"\n[online]\ntype = \"memcached\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("memcached"), "{err}");
    }

    #[test]
    fn redis_cluster_and_tls_keys_are_checked() {
        let config = parse(
            "project = \"p\"\n[online]\ntype = \"redis-cluster\"\nurls = [\"rediss://10.0.0.5:6379\", \"rediss://10.0.0.6:6379\"]\ntls_ca = \"certs/ca.pem\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.online.store_type, OnlineStoreType::RedisCluster);
        assert_eq!(config.online.urls.len(), 2);
        let config = parse(
            "project = \"p\"\n[online]\ntype = \"redis-cluster\"\n",
            &[("QUIVER_ONLINE__URLS", "redis://a:1, redis://b:2")],
        )
        .unwrap();
        assert_eq!(config.online.urls, ["redis://a:1", "redis://b:2"]);
        for (text, expected) in [
            ("type = \"redis-cluster\"", "`online.urls` is required"),
            (
                "type = \"redis-cluster\"\nurl = \"redis://a:1\"\nurls = [\"redis://a:1\"]",
                "a cluster takes its seed nodes in `online.urls`",
            ),
            (
                "type = \"redis-cluster\"\nurls = [\"http://:pw@a:1\"]",
                "`online.urls` must start with redis:// or rediss://",
            ),
            (
                "type = \"redis\"\nurl = \"rediss://a:1\"\ntls_cert = \"c.pem\"",
                "`online.tls_cert` and `online.tls_key` go together",
            ),
            (
                "type = \"redis\"\nurl = \"redis://a:1\"\ntls_ca = \"ca.pem\"",
                "apply to TLS: use rediss:// URLs",
            ),
        ] {
            let err = parse(&format!("project = \"p\"\n[online]\n{text}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn registry_url_must_be_postgres() {
        let config = parse(
            "project = \"p\"\n[registry]\nurl = \"postgres://quiver@db:5432/p\"\n",
            &[],
        )
        .unwrap();
        assert!(matches!(
            config.registry_location(Path::new("/repo")),
            crate::registry::RegistryLocation::Postgres { .. }
        ));
        let err = parse(
            "project = \"p\"\n[registry]\nurl = \"sqlite://x:secret@h/db\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`registry.url` must start with postgres://"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn urls_in_messages_hide_credentials() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://secret@host"), "redis://***@host");
        assert_eq!(redact_url("http://:pw@host/x@y"), "http://:***@host/x@y");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let err = parse(
            "project = \"p\"\n[online]\nurl = \"http://:pw@host\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("pw"), "{err}");
        let err = parse("project = \"p\"\n[offline]\nretention = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`offline.retention` must be a duration"),
            "{err}"
        );
    }

    #[test]
    fn checked_in_schema_is_current() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/quiver.toml.schema.json");
        let current = json_schema();
        if std::env::var_os("QUIVER_UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == current,
            "schemas/quiver.toml.schema.json is out of date; run `QUIVER_UPDATE_SCHEMAS=1 cargo test -p quiver-core config` and commit it"
        );
    }
}
