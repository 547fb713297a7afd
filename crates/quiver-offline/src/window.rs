//! Windowed aggregations: "sum of the last 7 days" as a declared feature.
//!
//! An aggregation view (`WINDOWS (…) [HOP …]`) aggregates its source's events per entity
//! over sliding windows. For a key at time `T`, a window `w` with hop `h` holds the events
//! with `floor_h(T − w) <= event_time < T` ([`quiver_core::window`]). Every window is
//! therefore a run of whole *tiles* of its hop plus the raw events of the tile it ends in:
//!
//! - [`spec`] checks the view's query at `apply` and splits it into an event query,
//!   decomposable aggregates and outputs over them;
//! - [`state`] holds the partial aggregates (tiles are one state per aggregate) and the
//!   merge code;
//! - [`program`] compiles a view once and evaluates windows from tiles and events;
//! - [`entity`] is what the online store keeps per entity;
//! - [`tiles`] writes tile files during materialization and [`export`] answers spines
//!   (numeric aggregates of tiles folded on the fly through `columns`' loops).
//!
//! The offline table of an aggregation view holds its events (`part-*.parquet`, sorted
//! by keys and event order) and, in the same date partitions, its tiles
//! (`tiles-*.parquet`: keys, `__hop`, `__start`, `__events`, `__state`). Exports and
//! online lookups merge the same tiles and events with the same code, so online and
//! offline agree by construction.

mod columns;
pub mod entity;
pub mod export;
pub mod program;
pub mod spec;
pub mod state;
pub mod tiles;

pub use entity::EntityState;
pub use program::{Event, WindowProgram};

/// The column of an event's position in its source (ties of first/last values).
pub const SEQUENCE: &str = "__seq";
/// Tile file columns besides the keys.
pub const TILE_HOP: &str = "__hop";
pub const TILE_START: &str = "__start";
pub const TILE_EVENTS: &str = "__events";
pub const TILE_STATE: &str = "__state";
/// The file-name prefix of tile files inside a date partition.
pub const TILE_PREFIX: &str = "tiles-";
