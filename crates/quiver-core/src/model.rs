//! The definition model: entities, sources, feature views and feature services as plain,
//! serializable data. This is what the registry stores and what every other crate reads.
//!
//! Each object splits into an *identity* part (a change makes a new version) and a
//! *metadata* part (a change updates the current version in place); see
//! [`Object::identity`] and [`Object::metadata`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of objects a feature repository declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Entity,
    Source,
    RequestSource,
    FeatureView,
    FeatureService,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::Entity,
        ObjectKind::Source,
        ObjectKind::RequestSource,
        ObjectKind::FeatureView,
        ObjectKind::FeatureService,
    ];

    /// The name used in the registry and in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Entity => "entity",
            ObjectKind::Source => "source",
            ObjectKind::RequestSource => "request_source",
            ObjectKind::FeatureView => "feature_view",
            ObjectKind::FeatureService => "feature_service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Entity => "entity",
            ObjectKind::Source => "source",
            ObjectKind::RequestSource => "request source",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::FeatureService => "feature service",
        })
    }
}

/// The longest name an object (entity, source, feature view, feature service) may have.
pub const MAX_NAME_CHARS: usize = 128;

/// The most bytes (UTF-8) a name may take: a view's name is a folder name of its offline
/// table, and file systems allow 255 bytes there.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks that `name` is an identifier: letters (of any script), digits and `_`, starting
/// with a letter or `_`, at most [`MAX_NAME_CHARS`] characters and [`MAX_NAME_BYTES`]
/// bytes. Object names become folder
/// names of offline tables, parts of online keys and metric labels, so anything else
/// (`/`, `..`, `:`, quotes, an empty name) could escape a folder or collide with another
/// object; the message says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("a name cannot be empty".to_string());
    };
    let count = name.chars().count();
    if count > MAX_NAME_CHARS {
        return Err(format!(
            "the name is {count} characters long; names have at most {MAX_NAME_CHARS}"
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the name takes {} bytes in UTF-8; names take at most {MAX_NAME_BYTES} (a folder name's limit), so use fewer or shorter characters",
            name.len()
        ));
    }
    if !(first.is_alphabetic() || first == '_') {
        return Err(format!(
            "`{name}` starts with {first:?}; a name starts with a letter or `_`"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_alphanumeric() || *c == '_')) {
        return Err(format!(
            "`{name}` contains {bad:?}; names are letters, digits and `_`"
        ));
    }
    Ok(())
}

/// The types an entity key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// `BIGINT` (64-bit signed integer).
    Int64,
    /// `INT` (32-bit signed integer).
    Int32,
    /// `VARCHAR` / `STRING`.
    String,
    /// `BYTES` / `BINARY`.
    Bytes,
}

impl KeyType {
    /// Parses a SQL type name; `None` when the type cannot be a key.
    pub fn from_sql(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "BIGINT" | "INT8" | "LONG" => Some(KeyType::Int64),
            "INT" | "INTEGER" | "INT4" => Some(KeyType::Int32),
            "VARCHAR" | "STRING" | "TEXT" => Some(KeyType::String),
            "BYTES" | "BINARY" | "VARBINARY" | "BYTEA" => Some(KeyType::Bytes),
            _ => None,
        }
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            KeyType::Int64 => "BIGINT",
            KeyType::Int32 => "INT",
            KeyType::String => "VARCHAR",
            KeyType::Bytes => "BYTES",
        }
    }
}

/// One column of an entity's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityKey {
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
}

/// `CREATE ENTITY driver (driver_id BIGINT)`: what features are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub keys: Vec<EntityKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The file format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl SourceFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Some(SourceFormat::Parquet),
            "csv" => Some(SourceFormat::Csv),
            "json" | "ndjson" | "jsonl" => Some(SourceFormat::Json),
            _ => None,
        }
    }

    /// The format a file name's extension implies (`.parquet`, `.csv`, `.json`, `.jsonl`).
    pub fn from_extension(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1;
        match ext.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(SourceFormat::Parquet),
            "csv" => Some(SourceFormat::Csv),
            "json" | "jsonl" | "ndjson" => Some(SourceFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Parquet => "parquet",
            SourceFormat::Csv => "csv",
            SourceFormat::Json => "json",
        }
    }
}

/// `CREATE SOURCE …`: raw event data in files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    /// A file, a folder or a glob, relative to the repository root (or absolute).
    pub path: String,
    pub format: SourceFormat,
    /// The event-time column.
    pub timestamp: String,
    /// The ingestion-time column that breaks ties between equal event times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Reader options (`delimiter`, `has_header` for CSV).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `CREATE REQUEST SOURCE txn (amount DOUBLE, …)`: fields that arrive with each request
/// (online: beside the entity keys; offline: as spine columns) and feed on-demand views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSource {
    pub name: String,
    /// The fields, typed (Arrow type names, as view columns are).
    pub fields: Vec<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The Arrow type of a request field's SQL type name; `None` when the type cannot be one.
pub fn request_field_type(sql: &str) -> Option<&'static str> {
    Some(match sql.to_ascii_uppercase().as_str() {
        "BIGINT" | "INT8" | "LONG" => "Int64",
        "INT" | "INTEGER" | "INT4" => "Int32",
        "DOUBLE" | "FLOAT8" | "DOUBLE PRECISION" => "Float64",
        "FLOAT" | "REAL" | "FLOAT4" => "Float32",
        "BOOLEAN" | "BOOL" => "Boolean",
        "VARCHAR" | "STRING" | "TEXT" => "Utf8",
        "TIMESTAMP" => "Timestamp(µs, \"UTC\")",
        _ => return None,
    })
}

/// How long a feature value stays valid after its event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ttl {
    seconds: u64,
}

impl Ttl {
    /// The longest duration Quiver takes: 36 500 days (100 years). Every time computation
    /// on durations (µs arithmetic, expiries) stays far from overflowing with it.
    pub const MAX_SECONDS: u64 = 36_500 * 86_400;

    pub fn from_seconds(seconds: u64) -> Self {
        Ttl { seconds }
    }

    pub fn seconds(self) -> u64 {
        self.seconds
    }

    /// Parses `'1 day'`, `'12 hours'`, `'1 day 12 hours'`, `'90s'`, `'2w'`, `'30 minutes'`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let seconds = parse_duration(text)?;
        if seconds == 0 {
            return Err("a TTL must be positive; omit TTL for values that never expire".into());
        }
        Ok(Ttl { seconds })
    }

    /// The duration in µs (never overflows: durations are at most [`Ttl::MAX_SECONDS`]).
    pub fn micros(self) -> i64 {
        (self.seconds.min(Ttl::MAX_SECONDS) as i64) * 1_000_000
    }
}

/// Parses a duration (`'1 day'`, `'12 hours'`, `'1 day 12 hours'`, `'90s'`, `'0s'`) into
/// seconds; at most [`Ttl::MAX_SECONDS`].
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let mut seconds: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let amount: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is too large", &rest[..digits]))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "" => {
                return Err(format!(
                    "`{amount}` needs a unit (seconds, minutes, hours, days, weeks)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit `{other}`; use seconds, minutes, hours, days or weeks"
                ));
            }
        };
        seconds = amount
            .checked_mul(factor)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(|| "the duration is too large".to_string())?;
        rest = rest[unit_len..].trim_start_matches([' ', ',']);
    }
    if seconds > Ttl::MAX_SECONDS {
        return Err(format!(
            "the duration is {seconds} seconds; durations are at most 36500 days (100 years)"
        ));
    }
    Ok(seconds)
}

impl fmt::Display for Ttl {
    /// In the largest of days, hours, minutes and seconds that divides the duration
    /// exactly, as people write durations: `30 days`, `36 hours`, `90 minutes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = [
            (86_400, "day"),
            (3_600, "hour"),
            (60, "minute"),
            (1, "second"),
        ]
        .into_iter()
        .find(|(size, _)| self.seconds.is_multiple_of(*size))
        .map(|(size, unit)| (self.seconds / size, unit))
        .unwrap_or((self.seconds, "second"));
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// `CREATE FEATURE VIEW … AS SELECT …`: features computed by a SQL query over sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureView {
    pub name: String,
    /// The entities whose keys identify a row.
    pub entities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether the view is materialized to the online store.
    pub online: bool,
    /// The body as written (for display and planning).
    pub query: String,
    /// The body as re-rendered by the SQL parser: formatting and comments do not change it,
    /// so only a real change of the query makes a new version.
    pub normalized_query: String,
    /// Sources the query reads, in order of first appearance; the first is the primary
    /// source, whose `TIMESTAMP` and `CREATED` columns the view must output.
    pub sources: Vec<String>,
    /// The sliding windows of an aggregation view (`WINDOWS (…)`), in seconds; empty for
    /// a row view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<u64>,
    /// The hop of every window (`HOP '…'`), in seconds; `None`: each window's default hop
    /// ([`crate::window::default_hop`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<u64>,
    /// An on-demand view (`ON DEMAND`): expressions over request fields and other views'
    /// features, evaluated at request time and in exports; no table, no online keys.
    /// `sources` then lists its inputs (request sources and views) and `entities` the
    /// entities of its input views.
    #[serde(default, skip_serializing_if = "is_false")]
    pub on_demand: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl FeatureView {
    /// Whether the view aggregates events over sliding windows.
    pub fn is_windowed(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The hop (tile size, seconds) of a window of this view.
    pub fn hop_of(&self, window: u64) -> u64 {
        self.hop
            .unwrap_or_else(|| crate::window::default_hop(window))
    }
}

/// One entry of a feature service: `view.feature` or `view.*`, optionally pinned to a
/// view version (`view@v2.feature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSelection {
    pub view: String,
    /// The view version the service reads; `None` follows the view (lookups read the
    /// serving version, exports the applied one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `None` selects every feature of the view (`view.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

impl fmt::Display for FeatureSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.view)?;
        if let Some(version) = self.version {
            write!(f, "@v{version}")?;
        }
        match &self.feature {
            Some(feature) => write!(f, ".{feature}"),
            None => f.write_str(".*"),
        }
    }
}

/// `CREATE FEATURE SERVICE name (view.feature, …)`: the features one model uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureService {
    pub name: String,
    pub features: Vec<FeatureSelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One output column of a feature view, as the query planner typed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The Arrow data type, as Arrow displays it (`Int64`, `Float64`, `Utf8`, …).
    pub data_type: String,
    pub nullable: bool,
}

/// The columns of a feature view split by role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSchema {
    /// Entity key columns, in the order the view's entities declare them.
    pub keys: Vec<Column>,
    /// The event-time column (`None` for an on-demand view, which has no rows of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Column>,
    /// The ingestion-time column, when the primary source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Column>,
    /// Everything else.
    pub features: Vec<Column>,
    /// For an aggregation view: what it computes (its features are the outputs × windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSchema>,
    /// For an on-demand view: what its expressions read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<OnDemandSchema>,
}

/// What an on-demand view's expressions read, as `apply` analysed its query: per input
/// (in `FROM` order), the columns the expressions use, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandSchema {
    pub inputs: Vec<OnDemandInput>,
}

/// One input of an on-demand view: a request source or a feature view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandInput {
    pub name: String,
    pub kind: OnDemandInputKind,
    /// The columns the expressions read (request fields, or the view's features).
    pub columns: Vec<Column>,
    /// For a view input: the content hash of the view's identity when this version was
    /// applied, so that a new version of an input makes a new version of the on-demand
    /// view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDemandInputKind {
    Request,
    View,
}

/// What an aggregation view computes, as the engine analysed its query at `apply`: the
/// events (one row per source row that passes `WHERE`, with every aggregate's argument
/// evaluated), the decomposable aggregates over them, and the outputs computed from the
/// aggregates once they are merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSchema {
    /// `SELECT <keys>, <event time>[, <created>], <arg> AS __a0, … FROM <source> [WHERE …]`.
    pub event_query: String,
    /// The event query's argument columns (`__a0`, …), typed.
    pub args: Vec<Column>,
    /// The aggregates (`__agg0`, …), each once.
    pub aggregates: Vec<WindowAggregate>,
    /// One per non-key output column of the query; each becomes one feature per window.
    pub outputs: Vec<WindowOutput>,
}

/// One decomposable aggregate of an aggregation view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowAggregate {
    /// `count_star`, `count`, `sum_int`, `sum_float`, `avg`, `min`, `max`, `stddev_samp`,
    /// `stddev_pop`, `var_samp`, `var_pop`, `first`, `last`.
    pub kind: String,
    /// Index of its argument in [`WindowSchema::args`] (`None` for `COUNT(*)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<usize>,
    /// The aggregate as written.
    pub sql: String,
    /// The Arrow type of its value.
    pub data_type: String,
}

/// One output of an aggregation view: an expression over the aggregates (`__agg0`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowOutput {
    /// The output column's name (each feature is `<name>_<window label>`).
    pub name: String,
    /// The expression over `__agg0`, … (a plain aggregate is just `__agg0`).
    pub expr: String,
    /// The Arrow type of its value.
    pub data_type: String,
}

impl ViewSchema {
    pub fn feature(&self, name: &str) -> Option<&Column> {
        self.features.iter().find(|c| c.name == name)
    }
}

/// A feature view together with its inferred schema: what the registry stores for a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedView {
    #[serde(flatten)]
    pub view: FeatureView,
    pub schema: ViewSchema,
}

/// Any registry object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Object {
    Entity(Entity),
    Source(Source),
    RequestSource(RequestSource),
    FeatureView(ResolvedView),
    FeatureService(FeatureService),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Entity(_) => ObjectKind::Entity,
            Object::Source(_) => ObjectKind::Source,
            Object::RequestSource(_) => ObjectKind::RequestSource,
            Object::FeatureView(_) => ObjectKind::FeatureView,
            Object::FeatureService(_) => ObjectKind::FeatureService,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::Entity(e) => &e.name,
            Object::Source(s) => &s.name,
            Object::RequestSource(s) => &s.name,
            Object::FeatureView(v) => &v.view.name,
            Object::FeatureService(s) => &s.name,
        }
    }

    /// The fields whose change makes a new version, as a JSON object.
    pub fn identity(&self) -> serde_json::Value {
        let mut value = self.to_json();
        if let Some(map) = value.as_object_mut() {
            for key in self.metadata_keys() {
                map.remove(*key);
            }
        }
        value
    }

    /// The fields whose change only updates metadata (comment, tags, owner, …).
    pub fn metadata(&self) -> serde_json::Value {
        let value = self.to_json();
        let mut out = serde_json::Map::new();
        for key in self.metadata_keys() {
            if let Some(v) = value.get(*key) {
                out.insert((*key).to_string(), v.clone());
            }
        }
        serde_json::Value::Object(out)
    }

    fn metadata_keys(&self) -> &'static [&'static str] {
        match self {
            Object::Entity(_) | Object::FeatureService(_) => &["comment"],
            Object::Source(_) | Object::RequestSource(_) => &["comment"],
            Object::FeatureView(_) => &["comment", "tags", "owner", "online", "query"],
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("definition objects always serialize to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_and_displays() {
        assert_eq!(Ttl::parse("1 day").unwrap().seconds(), 86_400);
        assert_eq!(Ttl::parse("1 day 12 hours").unwrap().seconds(), 129_600);
        assert_eq!(Ttl::parse("90s").unwrap().seconds(), 90);
        assert_eq!(Ttl::parse("2w").unwrap().to_string(), "14 days");
        assert_eq!(Ttl::parse("30 days").unwrap().to_string(), "30 days");
        assert_eq!(Ttl::parse("36h").unwrap().to_string(), "36 hours");
        assert_eq!(Ttl::parse("90 minutes").unwrap().to_string(), "90 minutes");
        assert_eq!(Ttl::parse("1 day").unwrap().to_string(), "1 day");
        assert!(
            Ttl::parse("999999999999 days")
                .unwrap_err()
                .contains("at most 36500 days")
        );
        assert!(Ttl::parse("36500 days").is_ok());
        assert!(Ttl::parse("36501 days").is_err());
        assert!(
            Ttl::parse("1 fortnight")
                .unwrap_err()
                .contains("unknown unit `fortnight`")
        );
        assert!(Ttl::parse("0 days").unwrap_err().contains("positive"));
        assert!(Ttl::parse("day").unwrap_err().contains("expected a number"));
        assert!(Ttl::parse("5").unwrap_err().contains("needs a unit"));
    }

    #[test]
    fn metadata_change_keeps_identity() {
        let view = |comment: &str| {
            Object::FeatureView(ResolvedView {
                view: FeatureView {
                    name: "v".into(),
                    entities: vec!["e".into()],
                    ttl: None,
                    tags: BTreeMap::new(),
                    owner: None,
                    comment: Some(comment.into()),
                    online: true,
                    query: "SELECT 1".into(),
                    normalized_query: "SELECT 1".into(),
                    sources: vec![],
                    windows: vec![],
                    hop: None,
                    on_demand: false,
                },
                schema: ViewSchema {
                    keys: vec![],
                    timestamp: Some(Column {
                        name: "ts".into(),
                        data_type: "Timestamp".into(),
                        nullable: false,
                    }),
                    created: None,
                    features: vec![],
                    window: None,
                    on_demand: None,
                },
            })
        };
        assert_eq!(view("a").identity(), view("b").identity());
        assert_ne!(view("a").metadata(), view("b").metadata());
    }
}
