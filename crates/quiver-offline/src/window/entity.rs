//! What the online store keeps of one entity of an aggregation view: its tiles per hop
//! that can still fall inside a window, and its raw events of the tiles windows end in.
//! Lookups merge them at request time with [`WindowProgram::window_states`], exactly as
//! exports merge the offline tiles; pushes add events to them.
//!
//! Byte layout (after the store's own version prefix): for each hop, a varint tile count
//! and the tiles (zig-zag varint start, then each aggregate's state); then a varint event
//! count and the events (order, then each argument as a tagged scalar).

use super::program::{Event, TilesPerHop, WindowProgram};
use super::state::{State, encoding};
use crate::{Error, Result};

/// One entity's online state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityState {
    /// Per hop (the program's order): `(start, states)` sorted by start.
    pub tiles: TilesPerHop,
    /// Events sorted by (time, created, source order).
    pub events: Vec<Event>,
}

impl EntityState {
    /// The latest event time the state knows of (from its events, else its tiles).
    pub fn latest(&self) -> Option<i64> {
        self.events.last().map(|e| e.order.ts).or_else(|| {
            self.tiles
                .iter()
                .filter_map(|t| t.last().map(|(s, _)| *s))
                .max()
        })
    }
}

impl WindowProgram {
    /// An entity's state from its tiles and events (both sorted), pruned at `now`.
    pub fn entity(&self, tiles: TilesPerHop, events: Vec<Event>, now: i64) -> EntityState {
        let mut state = EntityState { tiles, events };
        state.tiles.resize_with(self.hops.len(), Vec::new);
        self.prune(&mut state, now);
        state
    }

    /// Adds events (any order) to an entity's tiles and events, then prunes at `now`.
    pub fn add_events(&self, state: &mut EntityState, events: &[Event], now: i64) {
        state.tiles.resize_with(self.hops.len(), Vec::new);
        for event in events {
            for (hop, tiles) in self.hops.iter().zip(&mut state.tiles) {
                let start = quiver_core::window::floor(event.order.ts, *hop);
                match tiles.binary_search_by_key(&start, |(s, _)| *s) {
                    Ok(i) => self.add(&mut tiles[i].1, event),
                    Err(i) => {
                        let mut states = self.empty();
                        self.add(&mut states, event);
                        tiles.insert(i, (start, states));
                    }
                }
            }
            let at = state.events.partition_point(|e| e.order <= event.order);
            state.events.insert(at, event.clone());
        }
        self.prune(state, now);
    }

    /// Drops what no window at a time `>= now` can reach: tiles that start before the
    /// longest window of their hop, and events before the tile a window ends in.
    pub fn prune(&self, state: &mut EntityState, now: i64) {
        for ((hop, longest), tiles) in self.hops.iter().zip(&self.longest).zip(&mut state.tiles) {
            let oldest = quiver_core::window::window_start(now, *longest, *hop);
            tiles.retain(|(start, _)| *start >= oldest);
        }
        let keep_from = self
            .hops
            .iter()
            .map(|h| quiver_core::window::floor(now, *h))
            .min()
            .unwrap_or(now);
        state.events.retain(|e| e.order.ts >= keep_from);
    }

    /// When an entity's state stops mattering (µs): once its newest tile has left every
    /// window. `None` when it holds nothing.
    pub fn expires_at(&self, state: &EntityState) -> Option<i64> {
        let latest = state.latest()?;
        let reach = self
            .hops
            .iter()
            .zip(&self.longest)
            .map(|(h, l)| l.saturating_add(*h))
            .max()
            .unwrap_or(0);
        Some(latest.saturating_add(reach))
    }

    pub fn encode_entity(&self, state: &EntityState, out: &mut Vec<u8>) {
        for hop in 0..self.hops.len() {
            let tiles = state.tiles.get(hop).map_or(&[][..], Vec::as_slice);
            encoding::put_varint(out, tiles.len() as u64);
            for (start, states) in tiles {
                encoding::put_signed(out, *start);
                for s in states {
                    encoding::put_state(out, s);
                }
            }
        }
        encoding::put_varint(out, state.events.len() as u64);
        for event in &state.events {
            encoding::put_order(out, event.order);
            encoding::put_varint(out, event.args.len() as u64);
            for arg in &event.args {
                encoding::put_scalar(out, arg);
            }
        }
    }

    pub fn decode_entity(&self, bytes: &[u8]) -> Result<EntityState> {
        self.try_decode(bytes)
            .ok_or_else(|| Error::MaterializeFailed {
                view: self.view.clone(),
                message: "an online entity state does not decode (written by another version?)"
                    .to_string(),
            })
    }

    fn try_decode(&self, bytes: &[u8]) -> Option<EntityState> {
        let shapes = self.empty();
        let mut r = encoding::Reader::new(bytes);
        let mut tiles = Vec::with_capacity(self.hops.len());
        for _ in 0..self.hops.len() {
            let n = r.varint()? as usize;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let start = r.signed()?;
                let states = shapes
                    .iter()
                    .map(|shape| encoding::state(&mut r, shape))
                    .collect::<Option<Vec<_>>>()?;
                list.push((start, states));
            }
            tiles.push(list);
        }
        let n = r.varint()? as usize;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let order = encoding::order(&mut r)?;
            let count = r.varint()? as usize;
            let args = (0..count)
                .map(|_| encoding::scalar(&mut r))
                .collect::<Option<Vec<_>>>()?;
            events.push(Event { order, args });
        }
        r.is_empty().then_some(EntityState { tiles, events })
    }

    /// The states of every window at `t` for each entity (`None`: nothing stored):
    /// `[window][row]`.
    pub fn lookup_states(&self, entities: &[Option<EntityState>], t: i64) -> Vec<Vec<Vec<State>>> {
        (0..self.windows.len())
            .map(|w| {
                entities
                    .iter()
                    .map(|entity| match entity {
                        Some(e) => self.window_states(w, &e.tiles, &e.events, t),
                        None => self.empty(),
                    })
                    .collect()
            })
            .collect()
    }
}

/// Encodes a tile's states (for offline tile files).
pub fn encode_states(states: &[State]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in states {
        encoding::put_state(&mut out, s);
    }
    out
}

/// Decodes a tile's states shaped like `shapes`.
pub fn decode_states(bytes: &[u8], shapes: &[State]) -> Option<Vec<State>> {
    let mut r = encoding::Reader::new(bytes);
    let states = shapes
        .iter()
        .map(|shape| encoding::state(&mut r, shape))
        .collect::<Option<Vec<_>>>()?;
    r.is_empty().then_some(states)
}
