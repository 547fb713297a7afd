//! The canonical shape of a view's rows: key columns cast to the entity's key types,
//! event and created times cast to `Timestamp(µs, UTC)` (any unit or zone, naive values
//! read as UTC, ISO-8601 strings parsed), features as the query typed them.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::{DataFrame, Expr, cast, ident};
use quiver_core::model::{KeyType, ViewSchema};

use crate::Result;

/// The event-time type of every offline table.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

pub fn key_data_type(key_type: KeyType) -> DataType {
    match key_type {
        KeyType::Int64 => DataType::Int64,
        KeyType::Int32 => DataType::Int32,
        KeyType::String => DataType::Utf8,
        KeyType::Bytes => DataType::Binary,
    }
}

/// Names of the columns of a view's offline table, by role.
#[derive(Debug, Clone)]
pub struct ViewColumns {
    pub keys: Vec<(String, DataType)>,
    pub timestamp: String,
    pub created: Option<String>,
    /// The feature columns (for an aggregation view: its events' arguments `__a0`, …).
    pub features: Vec<String>,
    /// For an aggregation view: the stored source order of every event (`__seq`). It is
    /// part of the identity, so equal events are never merged: every event counts.
    pub sequence: Option<String>,
}

impl ViewColumns {
    /// `key_types` are the entities' key types in the order of `schema.keys`.
    pub fn new(schema: &ViewSchema, key_types: &[KeyType]) -> Self {
        let (features, sequence) = match &schema.window {
            Some(window) => (
                window.args.iter().map(|c| c.name.clone()).collect(),
                Some(crate::window::SEQUENCE.to_string()),
            ),
            None => (
                schema.features.iter().map(|c| c.name.clone()).collect(),
                None,
            ),
        };
        ViewColumns {
            keys: schema
                .keys
                .iter()
                .zip(key_types)
                .map(|(c, t)| (c.name.clone(), key_data_type(*t)))
                .collect(),
            timestamp: schema
                .timestamp
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            created: schema.created.as_ref().map(|c| c.name.clone()),
            features,
            sequence,
        }
    }

    /// Key, timestamp, created (and sequence) column names, in table order.
    pub fn identity(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        out.push(&self.timestamp);
        if let Some(c) = &self.created {
            out.push(c);
        }
        if let Some(s) = &self.sequence {
            out.push(s);
        }
        out
    }
}

/// Projects a view's query output onto the canonical column types.
pub fn normalize(df: DataFrame, columns: &ViewColumns) -> Result<DataFrame> {
    let mut exprs: Vec<Expr> = columns
        .keys
        .iter()
        .map(|(name, t)| cast(ident(name), t.clone()).alias(name))
        .collect();
    exprs.push(cast(ident(&columns.timestamp), timestamp_type()).alias(&columns.timestamp));
    if let Some(created) = &columns.created {
        exprs.push(cast(ident(created), timestamp_type()).alias(created));
    }
    exprs.extend(columns.features.iter().map(ident));
    Ok(df.select(exprs)?)
}
