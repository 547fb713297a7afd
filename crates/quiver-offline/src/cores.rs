//! CPU-bound steps spread over every core: a step split into numbered items, which a
//! thread per core takes in turn (the next free thread takes the next item, so uneven
//! items still keep every core busy). Used where the items are already in memory and
//! DataFusion is not running them: evaluating windows, putting features in spine order,
//! encoding a training set's columns.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `work(state, 0)`, …, `work(state, count - 1)`, in index order, computed on up to one
/// thread per core; each thread has a `state` of its own from `init` (buffers it reuses
/// from item to item). `None` when a thread panicked.
pub(crate) fn map_on_every_core<S, T: Send>(
    count: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> T + Sync,
) -> Option<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = Vec::with_capacity(count);
    let all_joined = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(count).max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break mine;
                        }
                        mine.push((i, work(&mut state, i)));
                    }
                })
            })
            .collect();
        let mut all_joined = true;
        for worker in workers {
            match worker.join() {
                Ok(mine) => done.extend(mine),
                Err(_) => all_joined = false,
            }
        }
        all_joined
    });
    if !all_joined {
        return None;
    }
    done.sort_by_key(|(i, _)| *i);
    Some(done.into_iter().map(|(_, value)| value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_index_order_with_state_per_thread() {
        let out = map_on_every_core(
            100,
            || 0usize,
            |calls, i| {
                *calls += 1;
                (i * i, *calls >= 1)
            },
        )
        .unwrap();
        assert_eq!(out.len(), 100);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, (sq, ok))| *sq == i * i && *ok)
        );
        assert_eq!(map_on_every_core(0, || (), |_, i| i), Some(Vec::new()));
    }

    #[test]
    fn a_panicking_item_gives_none() {
        let out = map_on_every_core(
            10,
            || (),
            |_, i| {
                assert!(i != 7, "item 7 fails");
                i
            },
        );
        assert!(out.is_none());
    }
}
