//! The partial aggregates ("states") of windowed aggregations, and their algebra: a state
//! starts empty, takes events one at a time or merges with another state, and finalizes
//! into the aggregate's value. Every decomposable aggregate Quiver supports is one of a
//! few state shapes:
//!
//! | aggregates | state |
//! |---|---|
//! | `COUNT(*)`, `COUNT(x)` | the count |
//! | `SUM(x)` | the sum (exact for integers) and the count of non-NULL values |
//! | `AVG(x)` | the sum as a float and the count |
//! | `MIN(x)`, `MAX(x)` | the extreme value |
//! | `STDDEV`, `VARIANCE` (sample and population) | count, mean and the sum of squared deviations, merged with Chan's formula |
//! | `FIRST_VALUE(x ORDER BY t)`, `LAST_VALUE(…)` | the chosen event's (time, created, source order) and value |
//!
//! Tiles, the online store and exports all hold these states and merge them with the code
//! here, so online and offline values agree by construction.

use std::cmp::Ordering;

/// A value an aggregate takes in or gives out: integers (also times and dates, as µs or
/// days), floats, booleans, strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// The value as a float (integers converted), for sums and moments.
    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Order within one type (values of an aggregate's input all have the same type);
    /// floats by IEEE total order.
    fn compare(&self, other: &Scalar) -> Ordering {
        match (self, other) {
            (Scalar::Int(a), Scalar::Int(b)) => a.cmp(b),
            (Scalar::Float(a), Scalar::Float(b)) => a.total_cmp(b),
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Str(a), Scalar::Str(b)) => a.cmp(b),
            (Scalar::Null, Scalar::Null) => Ordering::Equal,
            (Scalar::Null, _) => Ordering::Less,
            (_, Scalar::Null) => Ordering::Greater,
            (a, b) => a
                .as_f64()
                .zip(b.as_f64())
                .map_or(Ordering::Equal, |(a, b)| a.total_cmp(&b)),
        }
    }
}

/// The aggregates a window can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    /// `SUM` of integers: exact.
    SumInt,
    /// `SUM` of floats.
    SumFloat,
    Avg,
    Min,
    Max,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
    First,
    Last,
}

impl AggKind {
    /// Every kind.
    pub const ALL: [AggKind; 13] = [
        AggKind::CountStar,
        AggKind::Count,
        AggKind::SumInt,
        AggKind::SumFloat,
        AggKind::Avg,
        AggKind::Min,
        AggKind::Max,
        AggKind::StddevSamp,
        AggKind::StddevPop,
        AggKind::VarSamp,
        AggKind::VarPop,
        AggKind::First,
        AggKind::Last,
    ];
}

/// Where an event stands in its key's order: event time, created time, source order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventOrder {
    pub ts: i64,
    pub created: i64,
    pub seq: u64,
}

/// The partial aggregate of one [`AggKind`] over some events.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Count(i64),
    SumInt { sum: i64, n: i64 },
    SumFloat { sum: f64, n: i64 },
    Moments { n: i64, mean: f64, m2: f64 },
    Extreme(Option<Scalar>),
    Pick(Option<(EventOrder, Scalar)>),
}

impl State {
    /// The state of no events.
    pub fn empty(kind: AggKind) -> State {
        match kind {
            AggKind::CountStar | AggKind::Count => State::Count(0),
            AggKind::SumInt => State::SumInt { sum: 0, n: 0 },
            AggKind::SumFloat | AggKind::Avg => State::SumFloat { sum: 0.0, n: 0 },
            AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop => {
                State::Moments {
                    n: 0,
                    mean: 0.0,
                    m2: 0.0,
                }
            }
            AggKind::Min | AggKind::Max => State::Extreme(None),
            AggKind::First | AggKind::Last => State::Pick(None),
        }
    }

    /// Takes one event whose aggregate input is `value` (ignored by `COUNT(*)`).
    pub fn add(&mut self, kind: AggKind, value: &Scalar, order: EventOrder) {
        match (self, kind) {
            (State::Count(n), AggKind::CountStar) => *n += 1,
            (State::Count(n), _) => {
                if !value.is_null() {
                    *n += 1;
                }
            }
            (State::SumInt { sum, n }, _) => {
                if let Scalar::Int(v) = value {
                    *sum = sum.wrapping_add(*v);
                    *n += 1;
                }
            }
            (State::SumFloat { sum, n }, _) => {
                if let Some(v) = value.as_f64() {
                    *sum += v;
                    *n += 1;
                }
            }
            (State::Moments { n, mean, m2 }, _) => {
                if let Some(x) = value.as_f64() {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            (State::Extreme(current), kind) => {
                if !value.is_null() {
                    let replace = match current {
                        None => true,
                        Some(c) => {
                            let order = value.compare(c);
                            if kind == AggKind::Min {
                                order == Ordering::Less
                            } else {
                                order == Ordering::Greater
                            }
                        }
                    };
                    if replace {
                        *current = Some(value.clone());
                    }
                }
            }
            (State::Pick(current), kind) => {
                let replace = match current {
                    None => true,
                    Some((o, _)) => {
                        if kind == AggKind::First {
                            order < *o
                        } else {
                            order > *o
                        }
                    }
                };
                if replace {
                    *current = Some((order, value.clone()));
                }
            }
        }
    }

    /// Merges `other` (a state of the same kind over other events) into this one.
    pub fn merge(&mut self, kind: AggKind, other: &State) {
        match (self, other) {
            (State::Count(a), State::Count(b)) => *a += b,
            (State::SumInt { sum, n }, State::SumInt { sum: s, n: m }) => {
                *sum = sum.wrapping_add(*s);
                *n += m;
            }
            (State::SumFloat { sum, n }, State::SumFloat { sum: s, n: m }) => {
                *sum += s;
                *n += m;
            }
            (
                State::Moments { n, mean, m2 },
                State::Moments {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) => {
                if *nb == 0 {
                    return;
                }
                if *n == 0 {
                    (*n, *mean, *m2) = (*nb, *mb, *m2b);
                    return;
                }
                let total = *n + nb;
                let delta = mb - *mean;
                *mean += delta * *nb as f64 / total as f64;
                *m2 += m2b + delta * delta * (*n as f64) * (*nb as f64) / total as f64;
                *n = total;
            }
            (me @ State::Extreme(_), State::Extreme(Some(value))) => {
                me.add(kind, value, EventOrder::default());
            }
            (State::Pick(current), State::Pick(Some((order, value)))) => {
                let replace = match current {
                    None => true,
                    Some((o, _)) => {
                        if kind == AggKind::First {
                            order < o
                        } else {
                            order > o
                        }
                    }
                };
                if replace {
                    *current = Some((*order, value.clone()));
                }
            }
            _ => {}
        }
    }

    /// The aggregate's value: `COUNT` of nothing is 0, every other aggregate of nothing
    /// NULL (as in SQL).
    pub fn finalize(&self, kind: AggKind) -> Scalar {
        match (self, kind) {
            (State::Count(n), _) => Scalar::Int(*n),
            (State::SumInt { n: 0, .. }, _) | (State::SumFloat { n: 0, .. }, _) => Scalar::Null,
            (State::SumInt { sum, .. }, _) => Scalar::Int(*sum),
            (State::SumFloat { sum, n }, AggKind::Avg) => Scalar::Float(sum / *n as f64),
            (State::SumFloat { sum, .. }, _) => Scalar::Float(*sum),
            (State::Moments { n, m2, .. }, kind) => {
                let n = *n as f64;
                let (divisor, sqrt) = match kind {
                    AggKind::StddevSamp => (n - 1.0, true),
                    AggKind::VarSamp => (n - 1.0, false),
                    AggKind::StddevPop => (n, true),
                    _ => (n, false),
                };
                if divisor <= 0.0 {
                    Scalar::Null
                } else {
                    let variance = (m2 / divisor).max(0.0);
                    Scalar::Float(if sqrt { variance.sqrt() } else { variance })
                }
            }
            (State::Extreme(value), _) => value.clone().unwrap_or(Scalar::Null),
            (State::Pick(pick), _) => pick.as_ref().map_or(Scalar::Null, |(_, v)| v.clone()),
        }
    }
}

/// The compact byte form of states (tiles in offline tables, entity state online).
pub mod encoding {
    use super::{EventOrder, Scalar, State};

    pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn put_signed(out: &mut Vec<u8>, v: i64) {
        put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
    }

    /// Reads back what the `put_*` functions wrote; `None` on truncated input.
    pub struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Self {
            Reader { bytes }
        }

        pub fn is_empty(&self) -> bool {
            self.bytes.is_empty()
        }

        pub fn byte(&mut self) -> Option<u8> {
            let (first, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            Some(*first)
        }

        pub fn varint(&mut self) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = self.byte()?;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }

        pub fn signed(&mut self) -> Option<i64> {
            let v = self.varint()?;
            Some(((v >> 1) as i64) ^ -((v & 1) as i64))
        }

        pub fn f64(&mut self) -> Option<f64> {
            let (head, rest) = self.bytes.split_at_checked(8)?;
            self.bytes = rest;
            Some(f64::from_le_bytes(head.try_into().ok()?))
        }

        pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.bytes.split_at_checked(n)?;
            self.bytes = rest;
            Some(head)
        }
    }

    pub fn put_scalar(out: &mut Vec<u8>, value: &Scalar) {
        match value {
            Scalar::Null => out.push(0),
            Scalar::Int(i) => {
                out.push(1);
                put_signed(out, *i);
            }
            Scalar::Float(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Scalar::Bool(b) => out.push(if *b { 4 } else { 3 }),
            Scalar::Str(s) => {
                out.push(5);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    pub fn scalar(r: &mut Reader<'_>) -> Option<Scalar> {
        Some(match r.byte()? {
            0 => Scalar::Null,
            1 => Scalar::Int(r.signed()?),
            2 => Scalar::Float(r.f64()?),
            3 => Scalar::Bool(false),
            4 => Scalar::Bool(true),
            5 => {
                let n = r.varint()? as usize;
                Scalar::Str(String::from_utf8(r.take(n)?.to_vec()).ok()?)
            }
            _ => return None,
        })
    }

    pub fn put_order(out: &mut Vec<u8>, order: EventOrder) {
        put_signed(out, order.ts);
        put_signed(out, order.created);
        put_varint(out, order.seq);
    }

    pub fn order(r: &mut Reader<'_>) -> Option<EventOrder> {
        Some(EventOrder {
            ts: r.signed()?,
            created: r.signed()?,
            seq: r.varint()?,
        })
    }

    pub fn put_state(out: &mut Vec<u8>, state: &State) {
        match state {
            State::Count(n) => put_signed(out, *n),
            State::SumInt { sum, n } => {
                put_signed(out, *sum);
                put_signed(out, *n);
            }
            State::SumFloat { sum, n } => {
                out.extend_from_slice(&sum.to_le_bytes());
                put_signed(out, *n);
            }
            State::Moments { n, mean, m2 } => {
                put_signed(out, *n);
                out.extend_from_slice(&mean.to_le_bytes());
                out.extend_from_slice(&m2.to_le_bytes());
            }
            State::Extreme(value) => match value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put_scalar(out, v);
                }
            },
            State::Pick(pick) => match pick {
                None => out.push(0),
                Some((order, v)) => {
                    out.push(1);
                    put_order(out, *order);
                    put_scalar(out, v);
                }
            },
        }
    }

    /// Reads a state shaped like `shape` (the empty state of the same kind).
    pub fn state(r: &mut Reader<'_>, shape: &State) -> Option<State> {
        Some(match shape {
            State::Count(_) => State::Count(r.signed()?),
            State::SumInt { .. } => State::SumInt {
                sum: r.signed()?,
                n: r.signed()?,
            },
            State::SumFloat { .. } => State::SumFloat {
                sum: r.f64()?,
                n: r.signed()?,
            },
            State::Moments { .. } => State::Moments {
                n: r.signed()?,
                mean: r.f64()?,
                m2: r.f64()?,
            },
            State::Extreme(_) => State::Extreme(match r.byte()? {
                0 => None,
                _ => Some(scalar(r)?),
            }),
            State::Pick(_) => State::Pick(match r.byte()? {
                0 => None,
                _ => Some((order(r)?, scalar(r)?)),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(ts: i64) -> EventOrder {
        EventOrder {
            ts,
            created: 0,
            seq: ts as u64,
        }
    }

    #[test]
    fn merging_halves_equals_taking_every_event() {
        let values: Vec<f64> = vec![3.0, 1.5, -2.0, 8.25, 4.0, 4.0, 10.0];
        for kind in [
            AggKind::CountStar,
            AggKind::SumFloat,
            AggKind::Avg,
            AggKind::Min,
            AggKind::Max,
            AggKind::StddevSamp,
            AggKind::VarPop,
            AggKind::First,
            AggKind::Last,
        ] {
            let mut all = State::empty(kind);
            let (mut left, mut right) = (State::empty(kind), State::empty(kind));
            for (i, v) in values.iter().enumerate() {
                let value = Scalar::Float(*v);
                all.add(kind, &value, order(i as i64));
                if i < 3 {
                    left.add(kind, &value, order(i as i64));
                } else {
                    right.add(kind, &value, order(i as i64));
                }
            }
            let mut merged = right.clone();
            merged.merge(kind, &left);
            let (a, b) = (all.finalize(kind), merged.finalize(kind));
            match (a, b) {
                (Scalar::Float(a), Scalar::Float(b)) => {
                    assert!(
                        (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                        "{kind:?}: {a} {b}"
                    )
                }
                (a, b) => assert_eq!(a, b, "{kind:?}"),
            }
        }
    }

    #[test]
    fn empty_windows_count_zero_and_aggregate_null() {
        assert_eq!(
            State::empty(AggKind::CountStar).finalize(AggKind::CountStar),
            Scalar::Int(0)
        );
        for kind in [
            AggKind::SumInt,
            AggKind::Avg,
            AggKind::Max,
            AggKind::StddevSamp,
            AggKind::Last,
        ] {
            assert_eq!(State::empty(kind).finalize(kind), Scalar::Null, "{kind:?}");
        }
        // One value has no sample deviation.
        let mut s = State::empty(AggKind::StddevSamp);
        s.add(AggKind::StddevSamp, &Scalar::Float(1.0), order(0));
        assert_eq!(s.finalize(AggKind::StddevSamp), Scalar::Null);
    }

    #[test]
    fn states_round_trip_through_bytes() {
        let mut first = State::empty(AggKind::First);
        first.add(AggKind::First, &Scalar::Str("x".into()), order(5));
        for state in [
            State::Count(7),
            State::SumInt { sum: -4, n: 2 },
            State::SumFloat { sum: 1.5, n: 3 },
            State::Moments {
                n: 3,
                mean: 2.0,
                m2: 0.5,
            },
            State::Extreme(Some(Scalar::Int(-9))),
            State::Extreme(None),
            first,
        ] {
            let mut bytes = Vec::new();
            encoding::put_state(&mut bytes, &state);
            let mut reader = encoding::Reader::new(&bytes);
            assert_eq!(encoding::state(&mut reader, &state), Some(state.clone()));
            assert!(reader.is_empty());
        }
    }
}
