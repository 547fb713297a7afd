//! The point-in-time join kernel, on plain Arrow arrays.
//!
//! For each spine row (keys `k`, time `t`) it finds, among feature rows with the same
//! keys and `event_ts <= t` (and `event_ts >= t - ttl` when the view has a TTL), the one
//! with the greatest event time. Feature rows must arrive in *table order*: for each key,
//! ascending (event time, created), as offline tables store them (date partitions in
//! order, each sorted by keys, event time, created, and unique on those columns). Then
//! the last candidate is the answer, ties on event time go to the greatest `created`,
//! and no sort of the feature side is needed.
//!
//! How: the spine's distinct keys get dense group ids (a hash map built once, or a table
//! indexed by the key when integer keys are nearly consecutive); feature rows are mapped
//! to those ids as they stream in, and rows of keys the spine does not ask for are
//! dropped at once; a stable counting sort groups the survivors by id; each spine row is
//! then one binary search in its group. Memory is proportional to
//! the *matching* feature rows; [`KeyGroups::bucket`] splits the key space so a caller can
//! process a history larger than memory in several passes.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

/// Dense ids for the distinct non-NULL keys of the spine.
pub struct KeyGroups {
    lookup: KeyLookup,
    /// Group of each spine row; `None` when a key column is NULL (never matches).
    pub spine_groups: Vec<Option<u32>>,
    pub group_count: u32,
}

/// A fast hasher for integer keys (the SplitMix64 finalizer): the join hashes every
/// feature row's key, and SipHash would cost more than the rest of the lookup.
#[derive(Default, Clone, Copy)]
struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }

    fn write_i64(&mut self, i: i64) {
        self.0 = i as u64;
    }
}

type IntMap = HashMap<i64, u32, std::hash::BuildHasherDefault<IntHasher>>;

/// The most slots a dense key table may have (256 MiB of `u32`).
const DENSE_MAX_SLOTS: u64 = 1 << 26;

enum KeyLookup {
    /// One BIGINT key whose spine values span a range at most a few times their count
    /// (ids handed out in sequence): the group is an index into a table, no hashing.
    Dense {
        min: i64,
        /// Group of key `min + i` at `i`; `u32::MAX` for keys the spine does not ask for.
        groups: Vec<u32>,
    },
    /// One BIGINT key: the common case, hashed directly.
    Int64(IntMap),
    /// Any other key: Arrow's row format makes composite keys one comparable byte string.
    Rows {
        converter: RowConverter,
        map: HashMap<Box<[u8]>, u32>,
    },
}

impl KeyGroups {
    /// Groups the spine's key columns (already cast to the view's key types).
    pub fn new(spine_keys: &[ArrayRef]) -> Result<Self, ArrowError> {
        let n = spine_keys.first().map_or(0, |a| a.len());
        let mut spine_groups = Vec::with_capacity(n);
        let valid = |i: usize| spine_keys.iter().all(|a| a.is_valid(i));
        if let [single] = spine_keys
            && single.data_type() == &DataType::Int64
        {
            let values = single.as_primitive::<Int64Type>();
            let mut map = IntMap::default();
            for i in 0..n {
                spine_groups.push(if valid(i) {
                    let next = map.len() as u32;
                    Some(*map.entry(values.value(i)).or_insert(next))
                } else {
                    None
                });
            }
            let group_count = map.len() as u32;
            let mut keys: Vec<(i64, u32)> = map.iter().map(|(k, g)| (*k, *g)).collect();
            keys.sort_unstable();
            let rank = renumber(keys.iter().map(|(_, g)| *g), &mut spine_groups);
            map.values_mut().for_each(|g| *g = rank[*g as usize]);
            return Ok(KeyGroups {
                lookup: dense_table(&map).unwrap_or(KeyLookup::Int64(map)),
                spine_groups,
                group_count,
            });
        }
        let converter = RowConverter::new(
            spine_keys
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(spine_keys)?;
        let mut map: HashMap<Box<[u8]>, u32> = HashMap::new();
        for i in 0..n {
            spine_groups.push(if valid(i) {
                let next = map.len() as u32;
                let row = rows.row(i);
                let key: &[u8] = row.as_ref();
                Some(match map.get(key) {
                    Some(g) => *g,
                    None => {
                        map.insert(key.into(), next);
                        next
                    }
                })
            } else {
                None
            });
        }
        let group_count = map.len() as u32;
        // The row format compares as the keys do.
        let mut keys: Vec<(&[u8], u32)> = map.iter().map(|(k, g)| (k.as_ref(), *g)).collect();
        keys.sort_unstable();
        let rank = renumber(keys.iter().map(|(_, g)| *g), &mut spine_groups);
        map.values_mut().for_each(|g| *g = rank[*g as usize]);
        Ok(KeyGroups {
            lookup: KeyLookup::Rows { converter, map },
            spine_groups,
            group_count,
        })
    }

    /// The group of each feature row (`None`: a key the spine does not ask for, or NULL).
    pub fn feature_groups(
        &self,
        feature_keys: &[ArrayRef],
    ) -> Result<Vec<Option<u32>>, ArrowError> {
        let n = feature_keys.first().map_or(0, |a| a.len());
        let valid = |i: usize| feature_keys.iter().all(|a| a.is_valid(i));
        match &self.lookup {
            KeyLookup::Dense { min, groups } => {
                let values = feature_keys[0].as_primitive::<Int64Type>();
                Ok((0..n)
                    .map(|i| {
                        if !valid(i) {
                            return None;
                        }
                        let slot = values.value(i).wrapping_sub(*min) as u64;
                        match groups.get(usize::try_from(slot).ok()?) {
                            Some(&g) if g != u32::MAX => Some(g),
                            _ => None,
                        }
                    })
                    .collect())
            }
            KeyLookup::Int64(map) => {
                let values = feature_keys[0].as_primitive::<Int64Type>();
                Ok((0..n)
                    .map(|i| {
                        if valid(i) {
                            map.get(&values.value(i)).copied()
                        } else {
                            None
                        }
                    })
                    .collect())
            }
            KeyLookup::Rows { converter, map } => {
                let rows: Rows = converter.convert_columns(feature_keys)?;
                Ok((0..n)
                    .map(|i| {
                        if valid(i) {
                            map.get(rows.row(i).as_ref()).copied()
                        } else {
                            None
                        }
                    })
                    .collect())
            }
        }
    }

    /// Which of `buckets` passes a group belongs to.
    pub fn bucket(group: u32, buckets: u32) -> u32 {
        group % buckets
    }
}

/// Renumbers groups in key order: `by_key` lists the groups as first numbered (in order
/// of first appearance in the spine), sorted by their keys. Returns the new number of
/// each old one, and renumbers `spine_groups`. Offline tables are sorted by key, so with
/// groups in key order the grouping and the spine's lookups walk memory in order.
fn renumber(
    by_key: impl ExactSizeIterator<Item = u32>,
    spine_groups: &mut [Option<u32>],
) -> Vec<u32> {
    let mut rank = vec![0u32; by_key.len()];
    for (new, old) in by_key.enumerate() {
        rank[old as usize] = new as u32;
    }
    for g in spine_groups.iter_mut().flatten() {
        *g = rank[*g as usize];
    }
    rank
}

/// A dense table for `map` when its keys span at most four slots per key (and at most
/// [`DENSE_MAX_SLOTS`]); `None` when the keys are too sparse for one.
fn dense_table(map: &IntMap) -> Option<KeyLookup> {
    let min = *map.keys().min()?;
    let max = *map.keys().max()?;
    let span = (max as i128 - min as i128 + 1) as u64;
    if span > DENSE_MAX_SLOTS || span > 4 * map.len() as u64 + 1024 {
        return None;
    }
    let mut groups = vec![u32::MAX; span as usize];
    for (key, group) in map {
        groups[key.wrapping_sub(min) as u64 as usize] = *group;
    }
    Some(KeyLookup::Dense { min, groups })
}

/// The group of a feature row a pass keeps in place but does not use.
pub const DROPPED: u32 = u32::MAX;

/// Feature rows of one pass, grouped by key group, in table order within each group.
#[derive(Debug, Default)]
pub struct GroupedFeatures {
    /// Start of each group's run in `order`/`times` (`group_count + 1` entries).
    offsets: Vec<u32>,
    /// Position of each grouped row in the pass's concatenated feature rows.
    order: Vec<u32>,
    /// Event time of each grouped row (µs).
    times: Vec<i64>,
}

impl GroupedFeatures {
    /// `groups[p][i]`/`times[p][i]` describe the i-th feature row of part `p` (a file),
    /// parts and rows in table order; a row's position is its index in the concatenation
    /// of the parts. Rows of group [`DROPPED`] take a position but are never found.
    pub fn new(groups: &[&[u32]], times: &[&[i64]], group_count: u32) -> Self {
        let mut offsets = vec![0u32; group_count as usize + 1];
        for g in groups.iter().flat_map(|part| part.iter()) {
            if *g != DROPPED {
                offsets[*g as usize + 1] += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let total = offsets[group_count as usize] as usize;
        let mut cursor = offsets.clone();
        let mut order = vec![0u32; total];
        let mut sorted_times = vec![0i64; total];
        let rows = groups
            .iter()
            .zip(times)
            .flat_map(|(g, t)| g.iter().zip(t.iter()));
        for (row, (g, t)) in rows.enumerate() {
            if *g == DROPPED {
                continue;
            }
            let slot = cursor[*g as usize] as usize;
            order[slot] = row as u32;
            sorted_times[slot] = *t;
            cursor[*g as usize] += 1;
        }
        GroupedFeatures {
            offsets,
            order,
            times: sorted_times,
        }
    }

    /// The feature row for a spine row of `group` at time `t`, under the TTL (µs).
    pub fn lookup(&self, group: u32, t: i64, ttl: Option<i64>) -> Option<u32> {
        let start = self.offsets[group as usize] as usize;
        let end = self.offsets[group as usize + 1] as usize;
        let times = &self.times[start..end];
        let p = times.partition_point(|ts| *ts <= t);
        if p == 0 {
            return None;
        }
        let j = start + p - 1;
        if let Some(ttl) = ttl
            && self.times[j] < t.saturating_sub(ttl)
        {
            return None;
        }
        Some(self.order[j])
    }
}

/// Take-indices into a pass's feature rows for the given spine rows (in their order).
/// The rows are looked up in group order (a counting sort), so that each group's
/// feature times are read once and in memory order rather than at random.
pub fn take_indices(
    grouped: &GroupedFeatures,
    spine_rows: &[u32],
    spine_groups: &[Option<u32>],
    spine_times: &[Option<i64>],
    ttl: Option<i64>,
) -> UInt32Array {
    let group_count = grouped.offsets.len().saturating_sub(1);
    let group_of = |i: usize| spine_groups[spine_rows[i] as usize].map(|g| g as usize);
    // Rows without a group answer NULL; the others are bucketed by group.
    let mut starts = vec![0u32; group_count + 1];
    for i in 0..spine_rows.len() {
        if let Some(g) = group_of(i) {
            starts[g + 1] += 1;
        }
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    let mut in_group_order = vec![0u32; starts[group_count] as usize];
    for i in 0..spine_rows.len() {
        if let Some(g) = group_of(i) {
            in_group_order[starts[g] as usize] = i as u32;
            starts[g] += 1;
        }
    }
    let mut found: Vec<Option<u32>> = vec![None; spine_rows.len()];
    for i in in_group_order {
        let i = i as usize;
        let row = spine_rows[i] as usize;
        if let (Some(group), Some(t)) = (spine_groups[row], spine_times[row]) {
            found[i] = grouped.lookup(group, t, ttl);
        }
    }
    UInt32Array::from(found)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::Int64Array;

    fn groups(keys: Vec<Option<i64>>) -> KeyGroups {
        KeyGroups::new(&[Arc::new(Int64Array::from(keys)) as ArrayRef]).unwrap()
    }

    fn feature_groups(spine: &KeyGroups, keys: Vec<Option<i64>>) -> Vec<Option<u32>> {
        spine
            .feature_groups(&[Arc::new(Int64Array::from(keys)) as ArrayRef])
            .unwrap()
    }

    #[test]
    fn dense_and_hashed_keys_give_the_same_groups() {
        // Sequential ids: a dense table; the same ids and one far away: a hash map.
        let dense = groups(vec![Some(7), Some(5), None, Some(7), Some(9)]);
        assert!(matches!(dense.lookup, KeyLookup::Dense { .. }));
        let sparse = groups(vec![
            Some(7),
            Some(5),
            None,
            Some(7),
            Some(9),
            Some(i64::MAX),
        ]);
        assert!(matches!(sparse.lookup, KeyLookup::Int64(_)));
        // Groups are numbered in key order, not in order of appearance.
        assert_eq!(
            dense.spine_groups,
            vec![Some(1), Some(0), None, Some(1), Some(2)]
        );
        assert_eq!(sparse.spine_groups[..5], dense.spine_groups[..]);
        let probe = vec![
            Some(5),
            Some(6),
            Some(7),
            Some(9),
            Some(10),
            Some(4),
            None,
            Some(i64::MIN),
            Some(i64::MAX - 1),
        ];
        let expected = vec![
            Some(0),
            None,
            Some(1),
            Some(2),
            None,
            None,
            None,
            None,
            None,
        ];
        assert_eq!(feature_groups(&dense, probe.clone()), expected);
        assert_eq!(feature_groups(&sparse, probe), expected);
        // Keys around the ends of the range do not wrap into the table.
        let ends = groups(vec![Some(i64::MIN), Some(i64::MIN + 1)]);
        assert!(matches!(ends.lookup, KeyLookup::Dense { .. }));
        assert_eq!(
            feature_groups(
                &ends,
                vec![Some(i64::MIN + 1), Some(i64::MAX), Some(i64::MIN)]
            ),
            vec![Some(1), None, Some(0)]
        );
    }

    #[test]
    fn rows_of_several_parts_are_numbered_across_them() {
        // Two files: group 0 has rows in both; positions count on from the first part,
        // dropped rows included.
        let grouped = GroupedFeatures::new(
            &[&[0, 1], &[1, DROPPED, 0, 0]],
            &[&[10, 10], &[20, 25, 30, 40]],
            2,
        );
        assert_eq!(grouped.lookup(0, 10, None), Some(0));
        // The dropped row at position 3 (time 25) is never an answer.
        assert_eq!(grouped.lookup(0, 27, None), Some(0));
        assert_eq!(grouped.lookup(0, 35, None), Some(4));
        assert_eq!(grouped.lookup(0, 99, None), Some(5));
        assert_eq!(grouped.lookup(1, 15, None), Some(1));
        assert_eq!(grouped.lookup(1, 20, None), Some(2));
    }

    #[test]
    fn latest_row_at_or_before_t_within_ttl() {
        let spine = groups(vec![Some(1), Some(1), Some(2), None]);
        let fk: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 2, 3]));
        let fg: Vec<u32> = spine
            .feature_groups(&[fk])
            .unwrap()
            .into_iter()
            .map(|g| g.unwrap_or(u32::MAX))
            .collect();
        assert_eq!(fg, vec![0, 0, 1, u32::MAX]);
        let kept: Vec<u32> = fg[..3].to_vec();
        let grouped = GroupedFeatures::new(&[&kept], &[&[10, 20, 5]], spine.group_count);
        assert_eq!(grouped.lookup(0, 9, None), None);
        assert_eq!(grouped.lookup(0, 10, None), Some(0));
        assert_eq!(grouped.lookup(0, 19, None), Some(0));
        assert_eq!(grouped.lookup(0, 25, None), Some(1));
        assert_eq!(grouped.lookup(0, 25, Some(5)), Some(1));
        assert_eq!(grouped.lookup(0, 26, Some(5)), None);
        assert_eq!(grouped.lookup(1, 5, Some(0)), Some(2));
    }
}
