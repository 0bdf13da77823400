//! An ordered parallel map: items are worked on by the current rayon pool's threads in any
//! order, and their results merged in item order, as soon as the next result in order is done.
//!
//! The pass used to take its row groups in windows (a parallel map over a window, merged in
//! order alongside the next window's map). Every window waited for its slowest row group: on
//! the row-heavy dump (462 row groups) 8-9% of the two threads' time went to those waits. Here
//! no thread waits for another's item, only, when it is `ahead` items past the merge, for the
//! merge to catch up (which bounds the results held, and so the memory).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The results waiting to be merged, and who merges.
struct Queue<R> {
    /// Results done and not yet taken by the merge, by item index.
    done: BTreeMap<usize, R>,
    /// The index of the next result the merge takes (every one before it was taken).
    taken: usize,
    /// How many results were merged (the first `merged`; at most `taken`).
    merged: usize,
    /// Whether a thread is merging: it takes every result that is next in order, including
    /// those that arrive while it merges.
    merging: bool,
    /// Set once a merge failed or a thread panicked: no item is started after it.
    stop: bool,
}

/// Locks `m`, whether or not a thread panicked while holding it (a panic stops the map and is
/// raised again at its end; the state is only read to stop).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops the map when its thread unwinds, so that no other thread waits for a result that will
/// not come.
struct StopOnPanic<'a, R> {
    queue: &'a Mutex<Queue<R>>,
    moved: &'a Condvar,
}

impl<R> Drop for StopOnPanic<'_, R> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.queue).stop = true;
            self.moved.notify_all();
        }
    }
}

/// Calls `work` on every item of `items`, on every thread of the current rayon pool, and passes
/// the results to `merge` in item order, in runs of consecutive results (at least one), each
/// as soon as the result before it was merged. A thread starts an item fewer than `ahead` items
/// past the last one merged (`ahead` is at least one). The first error `merge` returns stops the
/// map (items already started are finished, none is started after) and is returned. A panic in
/// `work` or `merge` stops the map and is raised again.
pub fn ordered<T, R, E>(
    items: &[T],
    ahead: usize,
    work: impl Fn(&T) -> R + Sync,
    merge: impl FnMut(Vec<R>) -> Result<(), E> + Send,
) -> Result<(), E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let ahead = ahead.max(1);
    let next = AtomicUsize::new(0);
    let queue = Mutex::new(Queue { done: BTreeMap::new(), taken: 0, merged: 0, merging: false, stop: false });
    let moved = Condvar::new();
    let merger = Mutex::new((merge, None::<E>));
    let worker = || {
        let _stop = StopOnPanic { queue: &queue, moved: &moved };
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() {
                return;
            }
            {
                let mut q = lock(&queue);
                while !q.stop && i >= q.merged + ahead {
                    q = moved.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                if q.stop {
                    return;
                }
            }
            let result = work(&items[i]);
            let mut q = lock(&queue);
            q.done.insert(i, result);
            if q.merging {
                continue;
            }
            q.merging = true;
            // Merge every result that is next in order, until none is.
            loop {
                let mut ready = Vec::new();
                loop {
                    let taken = q.taken;
                    let Some(r) = q.done.remove(&taken) else { break };
                    ready.push(r);
                    q.taken += 1;
                }
                if ready.is_empty() || q.stop {
                    q.merging = false;
                    break;
                }
                drop(q);
                let failed = {
                    let mut m = lock(&merger);
                    let (merge, error) = &mut *m;
                    merge(ready).map_err(|e| *error = Some(e)).is_err()
                };
                q = lock(&queue);
                q.merged = q.taken;
                moved.notify_all();
                if failed {
                    q.stop = true;
                    q.merging = false;
                    return;
                }
            }
        }
    };
    // One worker per thread of the pool (a broadcast, not spawned tasks: a thread waiting in a
    // join inside `work` could take a spawned worker that was not started yet and run it on
    // top of its own, which would wait for the merge of the item its own holds).
    rayon::broadcast(|_| worker());
    match merger.into_inner().unwrap_or_else(PoisonError::into_inner).1 {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `threads` threads.
    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// Work that takes longer for some items than others (so that they finish out of order),
    /// in a parallel iterator of its own, as the pass's work is.
    fn slow(i: &usize) -> usize {
        use rayon::prelude::*;
        let spin = [50_000, 1, 20_000, 300, 7_000][i % 5];
        let x: u64 = (0..4u64)
            .into_par_iter()
            .map(|k| {
                let mut x = *i as u64 + k;
                for _ in 0..spin / 4 {
                    x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                }
                x
            })
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(x);
        *i
    }

    #[test]
    fn results_are_merged_once_each_in_item_order_whatever_the_threads() {
        let items: Vec<usize> = (0..500).collect();
        for threads in [1, 2, 3, 8] {
            for ahead in [1, 2, 16, 1000] {
                let mut merged = Vec::new();
                let mut runs = 0;
                pool(threads).install(|| {
                    ordered(&items, ahead, slow, |run: Vec<usize>| -> Result<(), ()> {
                        assert!(!run.is_empty());
                        runs += 1;
                        merged.extend(run);
                        Ok(())
                    })
                    .unwrap()
                });
                assert_eq!(merged, items, "{threads} threads, {ahead} ahead");
                assert!(runs >= 1);
            }
        }
        // No items: nothing merged, no error.
        let none: Vec<usize> = Vec::new();
        pool(2)
            .install(|| {
                ordered(&none, 4, slow, |_: Vec<usize>| -> Result<(), ()> { panic!("nothing to merge") })
            })
            .unwrap();
    }

    #[test]
    fn no_item_is_started_more_than_ahead_past_the_merge() {
        let items: Vec<usize> = (0..300).collect();
        for threads in [2, 4] {
            let merged = AtomicUsize::new(0);
            let ahead = 3;
            pool(threads).install(|| {
                ordered(
                    &items,
                    ahead,
                    |&i| {
                        let m = merged.load(Ordering::SeqCst);
                        assert!(i < m + ahead, "item {i} started with {m} merged");
                        slow(&i)
                    },
                    |run: Vec<usize>| -> Result<(), ()> {
                        merged.fetch_add(run.len(), Ordering::SeqCst);
                        Ok(())
                    },
                )
                .unwrap()
            });
            assert_eq!(merged.into_inner(), items.len());
        }
    }

    #[test]
    fn the_first_error_stops_the_map_and_is_returned() {
        let items: Vec<usize> = (0..1000).collect();
        for threads in [1, 2, 4] {
            let started = AtomicUsize::new(0);
            let mut merged = Vec::new();
            let result = pool(threads).install(|| {
                ordered(
                    &items,
                    4,
                    |&i| {
                        started.fetch_add(1, Ordering::SeqCst);
                        slow(&i)
                    },
                    |run: Vec<usize>| {
                        for i in run {
                            if i == 40 || i == 41 {
                                return Err(format!("item {i}"));
                            }
                            merged.push(i);
                        }
                        Ok(())
                    },
                )
            });
            assert_eq!(result, Err("item 40".to_string()), "{threads} threads");
            assert_eq!(merged, (0..40).collect::<Vec<_>>());
            // Items past the error, at most `ahead` past the merge and one per thread, only.
            let started = started.into_inner();
            assert!(started <= 41 + 4 + threads, "{started} items started");
        }
    }

    #[test]
    fn a_panic_in_the_work_or_the_merge_is_raised_and_nothing_hangs() {
        let items: Vec<usize> = (0..200).collect();
        for threads in [1, 2, 4] {
            let work = std::panic::catch_unwind(|| {
                pool(threads).install(|| {
                    ordered(
                        &items,
                        2,
                        |&i| if i == 77 { panic!("work {i}") } else { slow(&i) },
                        |_| -> Result<(), ()> { Ok(()) },
                    )
                })
            });
            assert!(work.is_err(), "{threads} threads: the work's panic");
            let merge = std::panic::catch_unwind(|| {
                pool(threads).install(|| {
                    ordered(&items, 2, slow, |run: Vec<usize>| -> Result<(), ()> {
                        assert!(!run.contains(&33), "merge 33");
                        Ok(())
                    })
                })
            });
            assert!(merge.is_err(), "{threads} threads: the merge's panic");
        }
    }
}
