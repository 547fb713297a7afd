//! The diff between the registry's current state and the definitions on disk: the
//! plan that `quiver plan` shows and `quiver apply` carries out.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ObjectRecord;
use crate::model::{Object, ObjectKind};

/// What apply does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new object, at version 1.
    Add { version: u32 },
    /// Its identity changed: a new version beside the old one.
    NewVersion { from: u32, to: u32 },
    /// Only metadata (comment, tags, owner) changed: the version stays.
    UpdateMetadata { version: u32 },
    /// Gone from the definitions: marked deleted, history kept.
    Remove { version: u32 },
    /// Back in the definitions, unchanged since it was removed.
    Restore { version: u32 },
}

impl Action {
    /// The version the object has after the change.
    pub fn version(self) -> u32 {
        match self {
            Action::Add { version }
            | Action::UpdateMetadata { version }
            | Action::Remove { version }
            | Action::Restore { version } => version,
            Action::NewVersion { to, .. } => to,
        }
    }

    /// The name recorded in history and shown in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Action::Add { .. } => "added",
            Action::NewVersion { .. } => "new_version",
            Action::UpdateMetadata { .. } => "metadata",
            Action::Remove { .. } => "removed",
            Action::Restore { .. } => "restored",
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: ObjectKind,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    /// Top-level fields that differ from the current version.
    pub fields: Vec<String>,
    /// The definition after the change (for a removal: the last one).
    pub definition: Object,
}

/// All changes, in kind then name order, and how many objects stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes of the given action name (`added`, `new_version`, …).
    pub fn count(&self, action: &str) -> usize {
        self.changes
            .iter()
            .filter(|c| c.action.name() == action)
            .count()
    }
}

/// The content hash of an object's identity (hex SHA-256 of its canonical JSON).
pub fn content_hash(object: &Object) -> String {
    let canonical = serde_json::to_string(&object.identity()).expect("JSON values serialize");
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn diff(current: &[ObjectRecord], desired: &[Object]) -> Plan {
    let by_key: HashMap<(ObjectKind, &str), &ObjectRecord> = current
        .iter()
        .map(|r| ((r.kind, r.name.as_str()), r))
        .collect();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let mut wanted = BTreeSet::new();
    for object in desired {
        wanted.insert((object.kind(), object.name()));
        let action = match by_key.get(&(object.kind(), object.name())) {
            None => Some(Action::Add { version: 1 }),
            Some(record) => {
                let same_identity = record.content_hash == content_hash(object);
                let same_metadata = record.definition.metadata() == object.metadata();
                match (record.deleted, same_identity, same_metadata) {
                    (false, true, true) => None,
                    (false, true, false) => Some(Action::UpdateMetadata {
                        version: record.version,
                    }),
                    (true, true, _) => Some(Action::Restore {
                        version: record.version,
                    }),
                    (_, false, _) => Some(Action::NewVersion {
                        from: record.version,
                        // The current version is always the greatest: versions only grow and a
                        // restore reuses the version the object was removed at.
                        to: record.version + 1,
                    }),
                }
            }
        };
        match action {
            None => unchanged += 1,
            Some(action) => {
                let fields = match by_key.get(&(object.kind(), object.name())) {
                    Some(record) if !matches!(action, Action::Add { .. }) => {
                        changed_fields(&record.definition, object)
                    }
                    _ => Vec::new(),
                };
                changes.push(Change {
                    kind: object.kind(),
                    name: object.name().to_string(),
                    action,
                    fields,
                    definition: object.clone(),
                });
            }
        }
    }
    for record in current {
        if !record.deleted && !wanted.contains(&(record.kind, record.name.as_str())) {
            changes.push(Change {
                kind: record.kind,
                name: record.name.clone(),
                action: Action::Remove {
                    version: record.version,
                },
                fields: Vec::new(),
                definition: record.definition.clone(),
            });
        }
    }
    changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Plan { changes, unchanged }
}

fn changed_fields(old: &Object, new: &Object) -> Vec<String> {
    let (old, new) = (old.to_json(), new.to_json());
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| k.to_string())
        .collect()
}
