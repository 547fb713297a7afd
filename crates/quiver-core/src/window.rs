//! The arithmetic of sliding windows, shared by the definition checks and the engine.
//!
//! For a key at time `T`, window `w` and hop `h`, an aggregation view aggregates the events
//! with `floor_h(T − w) <= event_time < T`: the end is exact (an event at `T` is not in
//! its own features) and the start is aligned to the hop, counted from the Unix epoch.
//! So every window is made of whole tiles of `h` plus the events of the tile at its end.

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// The hop a window gets when the view names none: 5 minutes under 12 hours, 1 hour under
/// 12 days, 1 day beyond.
pub fn default_hop(window: u64) -> u64 {
    if window < 12 * 3_600 {
        300
    } else if window < 12 * DAY {
        3_600
    } else {
        DAY
    }
}

/// The feature-name suffix of a window: its length in the largest of `d`, `h`, `m`, `s`
/// that divides it exactly (`1 hour` → `1h`, `90 minutes` → `90m`, `36 hours` → `36h`).
pub fn label(window: u64) -> String {
    for (unit, size) in [("d", DAY), ("h", 3_600), ("m", 60)] {
        if window.is_multiple_of(size) {
            return format!("{}{unit}", window / size);
        }
    }
    format!("{window}s")
}

/// `t` rounded down to a multiple of `step` (both µs), counted from the epoch; also for
/// times before 1970.
#[inline]
pub fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// The first instant of the window `[start, T)` of length `window` and hop `hop` (all µs).
#[inline]
pub fn window_start(t: i64, window: i64, hop: i64) -> i64 {
    floor(t.saturating_sub(window), hop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_use_the_largest_exact_unit() {
        assert_eq!(label(3_600), "1h");
        assert_eq!(label(5_400), "90m");
        assert_eq!(label(7 * DAY), "7d");
        assert_eq!(label(36 * 3_600), "36h");
        assert_eq!(label(90), "90s");
    }

    #[test]
    fn default_hops() {
        assert_eq!(default_hop(3_600), 300);
        assert_eq!(default_hop(12 * 3_600), 3_600);
        assert_eq!(default_hop(7 * DAY), 3_600);
        assert_eq!(default_hop(12 * DAY), DAY);
    }

    #[test]
    fn window_start_is_hop_aligned_also_before_the_epoch() {
        let hour = 3_600_000_000;
        assert_eq!(window_start(10 * hour + 5, hour, hour), 9 * hour);
        assert_eq!(window_start(10 * hour, hour, hour), 9 * hour);
        assert_eq!(floor(-1, hour), -hour);
    }
}
