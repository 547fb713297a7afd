//! Window states of numeric aggregates computed straight from a key's event columns.
//!
//! An export evaluates every window of every spine row over that key's events: where the
//! tiles are folded from events on the fly (sparse tiles), the generic path builds a tile
//! state per aggregate through [`State::add`] and merges it with [`State::merge`], one
//! enum dispatch and one [`Scalar`] per event and aggregate. For the aggregates of numbers
//! (`COUNT`, `SUM`, `AVG`, `MIN`, `MAX`, the variances) this module runs one loop per
//! aggregate over the columns instead, with the same arithmetic in the same order — tiles
//! folded from zero, merged oldest first, then the events of the tile the window ends
//! in — so its states are bit for bit those of the generic path (a test below holds it to
//! that). `FIRST_VALUE`/`LAST_VALUE` and non-numeric arguments keep the generic path.

use std::ops::Range;

use super::state::{AggKind, Scalar, State};

/// One aggregate argument's values for all events of a pass.
#[derive(Debug, Clone, Copy)]
pub(super) enum NumericColumn<'a> {
    Int {
        values: &'a [i64],
        valid: &'a [bool],
    },
    Float {
        values: &'a [f64],
        valid: &'a [bool],
    },
}

impl NumericColumn<'_> {
    /// Calls `f` with each valid value of `range`, as a float (as sums and moments take
    /// it), in order.
    #[inline]
    fn each_float(&self, range: Range<usize>, mut f: impl FnMut(f64)) {
        match self {
            NumericColumn::Int { values, valid } => {
                for (v, ok) in values[range.clone()].iter().zip(&valid[range]) {
                    if *ok {
                        f(*v as f64);
                    }
                }
            }
            NumericColumn::Float { values, valid } => {
                for (v, ok) in values[range.clone()].iter().zip(&valid[range]) {
                    if *ok {
                        f(*v);
                    }
                }
            }
        }
    }

    /// The valid values in `range`.
    #[inline]
    fn count_valid(&self, range: Range<usize>) -> usize {
        match self {
            NumericColumn::Int { valid, .. } | NumericColumn::Float { valid, .. } => {
                valid[range].iter().filter(|ok| **ok).count()
            }
        }
    }
}

/// A view's aggregates over numeric columns, when every one of them has such a form.
#[derive(Debug)]
pub(super) struct NumericAggregates<'a> {
    aggregates: Vec<(AggKind, Option<NumericColumn<'a>>)>,
}

impl<'a> NumericAggregates<'a> {
    /// `columns[i]` is argument `i`'s values (`None`: not numeric). `None` when an
    /// aggregate needs the generic path.
    pub(super) fn new(
        aggregates: &[(AggKind, Option<usize>)],
        columns: &[Option<NumericColumn<'a>>],
    ) -> Option<Self> {
        let mut out = Vec::with_capacity(aggregates.len());
        for (kind, arg) in aggregates {
            let column = match arg {
                Some(a) => Some((*columns.get(*a)?)?),
                None => None,
            };
            let supported = match (kind, column) {
                (AggKind::CountStar, _) => true,
                (AggKind::First | AggKind::Last, _) => false,
                (_, None) => false,
                // Integer sums stay exact: only integer arguments.
                (AggKind::SumInt, Some(NumericColumn::Float { .. })) => false,
                _ => true,
            };
            if !supported {
                return None;
            }
            out.push((*kind, column));
        }
        Some(NumericAggregates { aggregates: out })
    }

    /// Appends to `out` the window states (one per aggregate) of events `tiles` (index
    /// ranges, one per tile, oldest first: each folded from empty, then merged) followed
    /// by the events `head` (added one by one).
    pub(super) fn push_window_states(
        &self,
        tiles: &[Range<usize>],
        head: Range<usize>,
        out: &mut Vec<State>,
    ) {
        for (kind, column) in &self.aggregates {
            out.push(match (*kind, column) {
                (AggKind::CountStar, _) => {
                    let n: usize = tiles.iter().map(|t| t.len()).sum::<usize>() + head.len();
                    State::Count(n as i64)
                }
                (_, None) => State::empty(*kind),
                (AggKind::Count, Some(c)) => {
                    let n: usize = all(tiles, &head).map(|r| c.count_valid(r)).sum();
                    State::Count(n as i64)
                }
                (AggKind::SumInt, Some(c)) => {
                    let (mut sum, mut n) = (0i64, 0i64);
                    if let NumericColumn::Int { values, valid } = c {
                        for range in all(tiles, &head) {
                            for (v, ok) in values[range.clone()].iter().zip(&valid[range]) {
                                if *ok {
                                    sum = sum.wrapping_add(*v);
                                    n += 1;
                                }
                            }
                        }
                    }
                    State::SumInt { sum, n }
                }
                (AggKind::SumFloat | AggKind::Avg, Some(c)) => float_sum(c, tiles, head.clone()),
                (
                    AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop,
                    Some(c),
                ) => moments(c, tiles, head.clone()),
                (AggKind::Min | AggKind::Max, Some(c)) => extreme(*kind, c, tiles, &head),
                (AggKind::First | AggKind::Last, Some(_)) => State::empty(*kind),
            });
        }
    }
}

/// The event ranges of the tiles and the head, in order.
fn all<'r>(
    tiles: &'r [Range<usize>],
    head: &'r Range<usize>,
) -> impl Iterator<Item = Range<usize>> + 'r {
    tiles.iter().chain(std::iter::once(head)).cloned()
}

/// `SUM`/`AVG` of floats as [`State::SumFloat`] builds it: each tile's sum from 0, added
/// to the window's in order, then the head's values one by one.
fn float_sum(c: &NumericColumn<'_>, tiles: &[Range<usize>], head: Range<usize>) -> State {
    let (mut sum, mut n) = (0.0f64, 0i64);
    for tile in tiles {
        let mut tile_sum = 0.0f64;
        c.each_float(tile.clone(), |x| {
            tile_sum += x;
            n += 1;
        });
        sum += tile_sum;
    }
    c.each_float(head, |x| {
        sum += x;
        n += 1;
    });
    State::SumFloat { sum, n }
}

/// Count, mean and squared deviations as [`State::Moments`] builds them: Welford within a
/// tile, Chan's formula between tiles, Welford again for the head.
fn moments(c: &NumericColumn<'_>, tiles: &[Range<usize>], head: Range<usize>) -> State {
    let welford = |(n, mean, m2): &mut (i64, f64, f64), x: f64| {
        *n += 1;
        let delta = x - *mean;
        *mean += delta / *n as f64;
        *m2 += delta * (x - *mean);
    };
    let mut window = (0i64, 0.0f64, 0.0f64);
    for tile in tiles {
        let mut t = (0i64, 0.0f64, 0.0f64);
        c.each_float(tile.clone(), |x| welford(&mut t, x));
        let (n, mean, m2) = &mut window;
        let (nb, mb, m2b) = t;
        if nb == 0 {
            continue;
        }
        if *n == 0 {
            window = t;
            continue;
        }
        let total = *n + nb;
        let delta = mb - *mean;
        *mean += delta * nb as f64 / total as f64;
        *m2 += m2b + delta * delta * (*n as f64) * (nb as f64) / total as f64;
        *n = total;
    }
    c.each_float(head, |x| welford(&mut window, x));
    let (n, mean, m2) = window;
    State::Moments { n, mean, m2 }
}

/// `MIN`/`MAX`: the extreme by the order [`State`] uses (integers; floats by IEEE total
/// order), which does not depend on how events are grouped.
fn extreme(
    kind: AggKind,
    c: &NumericColumn<'_>,
    tiles: &[Range<usize>],
    head: &Range<usize>,
) -> State {
    match c {
        NumericColumn::Int { values, valid } => {
            State::Extreme(best(kind, values, valid, all(tiles, head), i64::cmp).map(Scalar::Int))
        }
        NumericColumn::Float { values, valid } => State::Extreme(
            best(kind, values, valid, all(tiles, head), f64::total_cmp).map(Scalar::Float),
        ),
    }
}

/// The smallest (`MIN`) or largest valid value in `ranges` by `order`; the first of
/// equals.
fn best<T: Copy>(
    kind: AggKind,
    values: &[T],
    valid: &[bool],
    ranges: impl Iterator<Item = Range<usize>>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Option<T> {
    let wanted = if kind == AggKind::Min {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Greater
    };
    let mut best: Option<T> = None;
    for range in ranges {
        for (v, ok) in values[range.clone()].iter().zip(&valid[range]) {
            if *ok && best.is_none_or(|b| order(v, &b) == wanted) {
                best = Some(*v);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::state::EventOrder;

    /// Random events in tiles, the generic fold (tile states from empty via `add`,
    /// merged into the window, head events added) against the column loops: equal to
    /// the bit, NULLs, negative zeros, NaNs and integer overflow included.
    #[test]
    fn column_loops_equal_the_generic_states_bit_for_bit() {
        // Every kind but FIRST/LAST, which keep the generic path.
        let kinds = AggKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, AggKind::First | AggKind::Last))
            .collect::<Vec<_>>();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let len = (next() % 40) as usize;
            let floats: Vec<f64> = (0..len)
                .map(|_| match next() % 10 {
                    0 => -0.0,
                    1 if round % 7 == 0 => f64::NAN,
                    2 => 1e300,
                    _ => (next() % 100_000) as f64 / 7.0 - 5_000.0,
                })
                .collect();
            let ints: Vec<i64> = (0..len)
                .map(|_| match next() % 10 {
                    0 => i64::MAX - 3,
                    _ => (next() % 2_000) as i64 - 1_000,
                })
                .collect();
            let valid: Vec<bool> = (0..len).map(|_| next() % 5 != 0).collect();
            // Split 0..len into tiles (some empty of valid values) and a head.
            let mut cuts: Vec<usize> = (0..(next() % 6))
                .map(|_| (next() as usize) % (len + 1))
                .collect();
            cuts.push(0);
            cuts.push(len);
            cuts.sort_unstable();
            let head = cuts[cuts.len() - 2]..len;
            let tiles: Vec<Range<usize>> = cuts[..cuts.len() - 1]
                .windows(2)
                .map(|w| w[0]..w[1])
                .filter(|r| !r.is_empty())
                .collect();
            let columns = [
                Some(NumericColumn::Int {
                    values: &ints,
                    valid: &valid,
                }),
                Some(NumericColumn::Float {
                    values: &floats,
                    valid: &valid,
                }),
            ];
            for &kind in &kinds {
                for arg in 0..2 {
                    if kind == AggKind::SumInt && arg == 1 {
                        continue;
                    }
                    let aggregate = [(kind, (kind != AggKind::CountStar).then_some(arg))];
                    let numeric = NumericAggregates::new(&aggregate, &columns).unwrap();
                    let mut fast = Vec::new();
                    numeric.push_window_states(&tiles, head.clone(), &mut fast);
                    assert_eq!(fast.len(), 1);
                    let value = |i: usize| match (valid[i], arg) {
                        (false, _) => Scalar::Null,
                        (true, 0) => Scalar::Int(ints[i]),
                        (true, _) => Scalar::Float(floats[i]),
                    };
                    let mut generic = State::empty(kind);
                    for tile in &tiles {
                        let mut t = State::empty(kind);
                        for i in tile.clone() {
                            t.add(kind, &value(i), EventOrder::default());
                        }
                        generic.merge(kind, &t);
                    }
                    for i in head.clone() {
                        generic.add(kind, &value(i), EventOrder::default());
                    }
                    assert_eq!(
                        format!("{:?}", bits(&fast[0])),
                        format!("{:?}", bits(&generic)),
                        "{kind:?} of argument {arg}, round {round}: tiles {tiles:?}, head {head:?}"
                    );
                }
            }
        }
    }

    /// A state with its floats as bit patterns (so NaN == NaN and -0.0 != 0.0).
    fn bits(state: &State) -> (String, Vec<u64>) {
        match state {
            State::SumFloat { sum, n } => (format!("sum n={n}"), vec![sum.to_bits()]),
            State::Moments { n, mean, m2 } => {
                (format!("moments n={n}"), vec![mean.to_bits(), m2.to_bits()])
            }
            State::Extreme(Some(Scalar::Float(f))) => ("extreme".into(), vec![f.to_bits()]),
            other => (format!("{other:?}"), Vec::new()),
        }
    }

    #[test]
    fn first_last_and_text_arguments_keep_the_generic_path() {
        let (values, valid) = ([1i64], [true]);
        let columns = [
            Some(NumericColumn::Int {
                values: &values,
                valid: &valid,
            }),
            None,
        ];
        assert!(NumericAggregates::new(&[(AggKind::Last, Some(0))], &columns).is_none());
        assert!(NumericAggregates::new(&[(AggKind::Max, Some(1))], &columns).is_none());
        assert!(NumericAggregates::new(&[(AggKind::SumInt, Some(0))], &columns).is_some());
    }
}
