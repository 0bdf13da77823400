//! An ordered parallel map: items are worked on by the current rayon pool's threads in any
//! order, and their results merged in item order, as soon as the next result in order is done.
//!
//! The pass used to take its row groups in windows (a parallel map over a window, merged in
//! order alongside the next window's map). Every window waited for its slowest row group: on
//! the row-heavy dump (462 row groups) 8-9% of the two threads' time went to those waits. Here
//! no thread waits for another's item, only, when it is `ahead` items past the merge, for the
//! merge to catch up (which bounds the results held, and so the memory).
//!
//! A row group's batches are read on the thread that took it, and observed there or, through
//! [`pipeline`], on a thread that has no row group left to start (the last ones of a dump, or a
//! dump of one huge row group, would otherwise leave the other threads waiting).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

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

/// How many threads of the pool have no item of an [`ordered`] map left to work on: counted by
/// the map as its workers run out of items, read by [`pipeline`] (their threads take a row
/// group's batches from the thread reading it).
#[derive(Debug, Default)]
pub struct Idle(AtomicUsize);

impl Idle {
    /// Whether any thread is idle.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
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
/// `work` or `merge` stops the map and is raised again. Each thread that finds no item left
/// counts itself in `idle`.
pub fn ordered<T, R, E>(
    items: &[T],
    ahead: usize,
    idle: &Idle,
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
                idle.0.fetch_add(1, Ordering::Relaxed);
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

/// A job of [`pipeline`]: its item until a thread claims it, then its result.
struct Job<T, R> {
    state: Mutex<JobState<T, R>>,
    finished: Condvar,
}

/// Where a [`Job`] stands.
enum JobState<T, R> {
    /// No thread has claimed it.
    Waiting(T),
    /// Claimed: a thread works on it (or it was abandoned).
    Running,
    /// Worked on: the result, or the panic the work raised.
    Done(std::thread::Result<R>),
    /// Its result was taken.
    Taken,
}

impl<T, R> Job<T, R> {
    /// The item, if no thread has claimed it yet; the job is then the caller's.
    fn claim(&self) -> Option<T> {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, JobState::Running) {
            JobState::Waiting(item) => Some(item),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Works on the job if no thread has claimed it (keeping the result, or the panic), and
    /// says whether it did.
    fn run(&self, work: &impl Fn(T) -> R) -> bool {
        let Some(item) = self.claim() else { return false };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)));
        *lock(&self.state) = JobState::Done(result);
        self.finished.notify_all();
        true
    }

    /// Whether the job's result is there to take.
    fn is_done(&self) -> bool {
        matches!(*lock(&self.state), JobState::Done(_))
    }

    /// The result of a claimed job, once the thread working on it is done.
    fn take(&self) -> std::thread::Result<R> {
        let mut state = lock(&self.state);
        loop {
            match std::mem::replace(&mut *state, JobState::Taken) {
                JobState::Done(result) => return result,
                other => {
                    *state = other;
                    state = self.finished.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

/// The jobs of a [`pipeline`] not folded yet, in order. Dropped (the pipeline's error or
/// panic), it claims those no thread has started, so that none is worked on for nothing.
struct Pending<T, R>(VecDeque<Arc<Job<T, R>>>);

impl<T, R> Drop for Pending<T, R> {
    fn drop(&mut self) {
        for job in &self.0 {
            drop(job.claim());
        }
    }
}

/// Items produced one at a time by the calling thread, worked on by any thread of the current
/// rayon pool (the caller included) and folded by the caller in the order produced: `produce`
/// hands each item to the function it is given; `work` turns an item into a result on
/// whichever thread claims it first; `fold` takes the results in order. At most `limit` items
/// (at least one) wait unfolded behind the one the caller folds; while another thread works
/// on the next result in order, the caller works on a later item no thread has claimed, and
/// waits only when there is none. The first error of `produce` or `fold` is returned (no
/// item waiting then is worked on); a panic in `work` is raised again when its result's turn
/// to be folded comes.
///
/// Items wait for other threads only while one is `idle`: otherwise (and in a pool of one
/// thread) each is worked on by the caller and folded as soon as it is produced, while its data
/// is in cache (produced ahead, they took longer).
///
/// The pass reads a row group's batches on one thread: with few row groups (one huge one, or
/// the last ones of a dump) the other threads take batches of it instead of waiting.
pub fn pipeline<T, R, E>(
    limit: usize,
    idle: &Idle,
    produce: impl FnOnce(&mut dyn FnMut(T) -> Result<(), E>) -> Result<(), E> + Send,
    work: impl Fn(T) -> R + Sync,
    mut fold: impl FnMut(R) -> Result<(), E> + Send,
) -> Result<(), E>
where
    T: Send,
    R: Send,
    E: Send,
{
    if rayon::current_num_threads() <= 1 {
        return produce(&mut |item| fold(work(item)));
    }
    let limit = limit.max(1);
    let work = &work;
    rayon::scope(|scope| {
        let mut pending = Pending(VecDeque::new());
        // Folds the first job: worked on here if no thread has claimed it; else, while another
        // thread works on it, later jobs no thread has claimed are worked on here.
        let mut fold_first = |jobs: &mut VecDeque<Arc<Job<T, R>>>| -> Result<(), E> {
            let Some(job) = jobs.pop_front() else { return Ok(()) };
            job.run(work);
            while !job.is_done() && jobs.iter().any(|later| later.run(work)) {}
            match job.take() {
                Ok(result) => fold(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        };
        produce(&mut |item| {
            let job = Arc::new(Job { state: Mutex::new(JobState::Waiting(item)), finished: Condvar::new() });
            let theirs = Arc::clone(&job);
            scope.spawn(move |_| {
                theirs.run(work);
            });
            pending.0.push_back(job);
            // No thread idle: this item now, here (and any before it, which a thread took).
            let keep = if idle.any() { limit } else { 0 };
            while pending.0.len() > keep {
                fold_first(&mut pending.0)?;
            }
            Ok(())
        })?;
        while !pending.0.is_empty() {
            fold_first(&mut pending.0)?;
        }
        Ok(())
    })
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
                    ordered(&items, ahead, &Idle::default(), slow, |run: Vec<usize>| -> Result<(), ()> {
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
                ordered(&none, 4, &Idle::default(), slow, |_: Vec<usize>| -> Result<(), ()> {
                    panic!("nothing to merge")
                })
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
                    &Idle::default(),
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
                    &Idle::default(),
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
                        &Idle::default(),
                        |&i| if i == 77 { panic!("work {i}") } else { slow(&i) },
                        |_| -> Result<(), ()> { Ok(()) },
                    )
                })
            });
            assert!(work.is_err(), "{threads} threads: the work's panic");
            let merge = std::panic::catch_unwind(|| {
                pool(threads).install(|| {
                    ordered(&items, 2, &Idle::default(), slow, |run: Vec<usize>| -> Result<(), ()> {
                        assert!(!run.contains(&33), "merge 33");
                        Ok(())
                    })
                })
            });
            assert!(merge.is_err(), "{threads} threads: the merge's panic");
        }
    }

    /// `pipeline` over `0..n` on a pool of `threads`, told that a thread is idle: produced in
    /// order (checking that at most `limit`, at least one, are produced and not folded yet when
    /// the next is), worked on by `work`, folded into the returned list.
    fn piped(
        threads: usize,
        n: usize,
        limit: usize,
        work: impl Fn(usize) -> usize + Sync + Send,
    ) -> Result<Vec<usize>, String> {
        piped_with(threads, n, limit, true, work)
    }

    /// [`piped`], with `idle` saying whether the pipeline is told that a thread is idle (when
    /// not, every item is folded before the next is produced).
    fn piped_with(
        threads: usize,
        n: usize,
        limit: usize,
        idle: bool,
        work: impl Fn(usize) -> usize + Sync + Send,
    ) -> Result<Vec<usize>, String> {
        let unfolded = AtomicUsize::new(0);
        let mut folded = Vec::new();
        let bound = if idle { limit.max(1) } else { 0 };
        let idle = Idle(AtomicUsize::new(usize::from(idle)));
        pool(threads)
            .install(|| {
                pipeline(
                    limit,
                    &idle,
                    |push| {
                        for i in 0..n {
                            let before = unfolded.fetch_add(1, Ordering::SeqCst);
                            assert!(before <= bound, "item {i} produced with {before} unfolded");
                            push(i)?;
                        }
                        Ok(())
                    },
                    work,
                    |r: usize| {
                        unfolded.fetch_sub(1, Ordering::SeqCst);
                        if r == usize::MAX {
                            return Err("fold".to_string());
                        }
                        folded.push(r);
                        Ok(())
                    },
                )
            })
            .map(|()| folded)
    }

    #[test]
    fn a_pipeline_folds_every_item_once_in_order_whatever_the_threads() {
        for threads in [1, 2, 3, 8] {
            for limit in [0, 1, 2, 50] {
                for idle in [true, false] {
                    let got = piped_with(threads, 300, limit, idle, |i| slow(&i));
                    assert_eq!(got, Ok((0..300).collect()), "{threads} threads, limit {limit}, idle {idle}");
                }
            }
        }
        assert_eq!(piped(2, 0, 2, |i| i), Ok(Vec::new()));
    }

    #[test]
    fn a_pipeline_lets_the_other_threads_work_on_its_items() {
        let caller = AtomicUsize::new(usize::MAX);
        let elsewhere = AtomicUsize::new(0);
        let got = piped(2, 60, 2, |i| {
            // The first item is worked on by the caller or by the other thread; either way, the
            // items of a slow sequence cannot all stay on one thread while the other is idle.
            let me = rayon::current_thread_index().unwrap_or(usize::MAX);
            let _ = caller.compare_exchange(usize::MAX, me, Ordering::SeqCst, Ordering::SeqCst);
            if me != caller.load(Ordering::SeqCst) {
                elsewhere.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            i
        });
        assert_eq!(got, Ok((0..60).collect()));
        assert!(elsewhere.into_inner() > 0, "no item was worked on by the second thread");
    }

    #[test]
    fn a_pipeline_returns_the_first_error_and_raises_a_panic_in_the_work() {
        for threads in [1, 2, 4] {
            // An error in the fold: returned, the results before it folded.
            let started = AtomicUsize::new(0);
            let failed = piped(threads, 500, 2, |i| {
                started.fetch_add(1, Ordering::SeqCst);
                if i == 40 {
                    usize::MAX
                } else {
                    slow(&i)
                }
            });
            assert_eq!(failed, Err("fold".to_string()), "{threads} threads");
            // Items past the error: those produced by then only (the limit and one in hand).
            assert!(started.into_inner() <= 41 + 3, "{threads} threads: work went on after the error");
            // An error in the producer.
            let mut folded = Vec::new();
            let produced = pool(threads).install(|| {
                pipeline(
                    2,
                    &Idle(AtomicUsize::new(1)),
                    |push| {
                        for i in 0..100 {
                            if i == 30 {
                                return Err("produce".to_string());
                            }
                            push(i)?;
                        }
                        Ok(())
                    },
                    |i: usize| slow(&i),
                    |r| {
                        folded.push(r);
                        Ok(())
                    },
                )
            });
            assert_eq!(produced, Err("produce".to_string()));
            assert!(folded.len() <= 30 && folded.iter().enumerate().all(|(k, &r)| k == r));
            // A panic in the work, on whichever thread: raised, nothing hangs.
            let panicked = std::panic::catch_unwind(|| {
                piped(threads, 200, 2, |i| if i == 77 { panic!("work {i}") } else { slow(&i) })
            });
            assert!(panicked.is_err(), "{threads} threads: the work's panic");
        }
    }
}
