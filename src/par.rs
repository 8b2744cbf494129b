//! Order-keeping parallelism for the per-row work of export and verify: each row's parse,
//! projections and hashes need nothing from its neighbours, so they run on every core while the
//! order-dependent work (proof paths, chain, sorts, Parquet) stays on one thread.
//!
//! [`ordered`] streams: a source thread, a worker per core taking whole items (chunks of
//! thousands of rows), and the calling thread applying results in order. [`map_parts`] splits
//! one vector across the cores, for the few rows made outside the stream (a bundle's boundary
//! rows). Scoped threads rather than a pool crate: an item is milliseconds of work, so a thread
//! per core per call costs well under 1 %.

/// Threads to use: `available_parallelism`, at most 16.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// `f` on each of up to [`threads`] consecutive, equal parts of `items`, on scoped threads; the
/// results in part order. Small inputs are one part, on the calling thread.
pub fn map_parts<T: Send, R: Send>(mut items: Vec<T>, f: impl Fn(Vec<T>) -> R + Sync) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < 256 {
        return vec![f(items)];
    }
    // Split off equal tails, last first, so the parts in reverse are in input order.
    let size = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    while items.len() > size {
        parts.push(items.split_off(items.len() - size));
    }
    parts.push(items);
    parts.reverse();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| s.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parallel map thread panicked"))
            .collect()
    })
}

/// A three-stage pipeline: `source` produces items (calling the `emit` it is given for each),
/// `workers` threads each take the next item and compute `work` on it, and the calling thread
/// gets each item with its result through `apply`, in the order they were emitted. A worker takes
/// a whole item and never waits for another, so a core is idle only when no item is ready. `emit`
/// holds the source back while `workers + 2` items are out (one per worker, one waiting, one
/// being applied), so memory stays bounded whatever order the workers finish in.
///
/// Applied items go back to the source's thread and are dropped there on its next `emit`: for
/// buffers the source allocated, the allocator's fast path (a buffer freed on another thread
/// takes its cross-thread path).
///
/// Stopping early: `apply` returns `false` to stop; from then on `emit` returns `false` (the
/// source should stop) and nothing more is applied. A panic in `work` is carried to the calling
/// thread and resumed there in the item's turn; every thread then stops, so the panic comes out
/// of this call instead of hanging it. Returns what `source` returns.
pub fn ordered<T, R, S>(
    workers: usize,
    source: impl FnOnce(&mut dyn FnMut(T) -> bool) -> S + Send,
    work: impl Fn(&T) -> R + Sync,
    mut apply: impl FnMut(&T, R) -> bool,
) -> S
where
    T: Send,
    R: Send,
    S: Send,
{
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::sync::{Arc, Mutex, mpsc};
    let workers = workers.max(1);
    let in_flight = workers + 2;
    let (send, items) = mpsc::sync_channel::<(usize, T)>(1);
    // Workers take turns at the one receiver (the lock is held only to take the next item). It
    // goes when the last worker does, so a source whose items nobody takes sees `emit` fail.
    let items = Arc::new(Mutex::new(items));
    let (spent, to_free) = mpsc::channel::<T>();
    let (done, to_apply) = mpsc::channel();
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let (mut sent, mut freed) = (0usize, 0usize);
            source(&mut |item| {
                freed += to_free.try_iter().map(drop).count();
                while sent - freed >= in_flight {
                    match to_free.recv() {
                        Ok(item) => drop(item),
                        // The caller's side stopped.
                        Err(_) => return false,
                    }
                    freed += 1;
                }
                let taken = send.send((sent, item)).is_ok();
                sent += 1;
                taken
            })
        });
        for _ in 0..workers {
            let (items, done, work) = (Arc::clone(&items), done.clone(), &work);
            s.spawn(move || {
                loop {
                    let next = items.lock().map(|items| items.recv());
                    let Ok(Ok((n, item))) = next else { return };
                    let result = catch_unwind(AssertUnwindSafe(|| work(&item)));
                    let panicked = result.is_err();
                    if done.send((n, item, result)).is_err() || panicked {
                        return;
                    }
                }
            });
        }
        drop((items, done));
        // Items come back in any order; they are applied in emitted order.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        'apply: for (n, item, result) in to_apply {
            waiting.insert(n, (item, result));
            while let Some((item, result)) = waiting.remove(&next) {
                let go_on = apply(&item, result.unwrap_or_else(|panic| resume_unwind(panic)));
                next += 1;
                // Once the source has finished, the last items are dropped here instead.
                let _ = spent.send(item);
                if !go_on {
                    break 'apply;
                }
            }
        }
        // Dropping these lets every other thread end: workers' sends and the source's wait fail.
        drop((spent, waiting));
        // A panic of the source comes out as itself.
        producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_on_every_path() {
        for n in [0usize, 1, 255, 256, 4_097, 10_000] {
            let items: Vec<u64> = (0..n as u64).collect();
            let parts = super::map_parts(items, |part| part);
            assert!(parts.len() <= super::threads().max(1), "{n}");
            assert_eq!(parts.concat(), (0..n as u64).collect::<Vec<_>>(), "{n}");
        }
    }

    /// Items are applied in emitted order even when a later one finishes first (item 0's work
    /// waits for item 1's), with their own results, and the source is held to `workers + 2`
    /// items out.
    #[test]
    fn ordered_applies_in_order_and_bounds_what_is_out() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (one_done, wait_for_one) = std::sync::mpsc::channel::<()>();
        let (one_done, wait_for_one) = (Mutex::new(one_done), Mutex::new(wait_for_one));
        let (emitted, applied, most_out) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let mut order = Vec::new();
        let ended = super::ordered(
            2,
            |emit| {
                for i in 0..100usize {
                    assert!(emit(i));
                    let out =
                        emitted.fetch_add(1, Ordering::SeqCst) + 1 - applied.load(Ordering::SeqCst);
                    most_out.fetch_max(out, Ordering::SeqCst);
                }
                "source ended"
            },
            |&i| {
                match i {
                    0 => wait_for_one.lock().unwrap().recv().unwrap(),
                    1 => one_done.lock().unwrap().send(()).unwrap(),
                    _ => {}
                }
                i * 3
            },
            |&i, tripled| {
                assert_eq!(tripled, i * 3);
                order.push(i);
                applied.fetch_add(1, Ordering::SeqCst);
                true
            },
        );
        assert_eq!(ended, "source ended");
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        // Counted after `emit` returned, so one more than the bound can show as out.
        assert!(most_out.load(Ordering::SeqCst) <= 2 + 2 + 1);
    }

    /// A panic of the source comes out of the call as itself.
    #[test]
    fn ordered_carries_a_source_panic_out() {
        let result = std::panic::catch_unwind(|| {
            super::ordered(
                2,
                |emit| {
                    emit(1usize);
                    panic!("source broke")
                },
                |&i| i,
                |_, _| true,
            )
        });
        let panic = result.expect_err("the source's panic");
        assert_eq!(panic.downcast_ref::<&str>().copied(), Some("source broke"));
    }

    /// One worker, and more workers than items: everything applied once, in order.
    #[test]
    fn ordered_with_one_worker_and_with_idle_workers() {
        for (workers, n) in [(1, 50usize), (8, 3), (3, 0)] {
            let mut order = Vec::new();
            super::ordered(
                workers,
                |emit| (0..n).for_each(|i| assert!(emit(i))),
                |&i| i + 1,
                |&i, r| {
                    assert_eq!(r, i + 1);
                    order.push(i);
                    true
                },
            );
            assert_eq!(order, (0..n).collect::<Vec<_>>(), "{workers} workers");
        }
    }

    /// `apply` stopping: nothing after that item is applied, and the source is told (its `emit`
    /// fails) and can stop, with every thread ended.
    #[test]
    fn ordered_stops_when_apply_says_so() {
        let mut applied = Vec::new();
        let emitted = super::ordered(
            2,
            |emit| (0..1_000usize).take_while(|&i| emit(i)).count(),
            |&i| i,
            |&i, _| {
                applied.push(i);
                i < 10
            },
        );
        assert_eq!(applied, (0..=10).collect::<Vec<_>>());
        assert!(emitted < 1_000, "the source ran on: {emitted}");
    }

    /// A panic in `work` comes out of the call (in its item's turn), instead of hanging it.
    #[test]
    fn ordered_carries_a_worker_panic_out() {
        let mut applied = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::ordered(
                2,
                |emit| (0..1_000usize).take_while(|&i| emit(i)).count(),
                |&i| assert!(i != 7, "item 7"),
                |&i, ()| {
                    applied.push(i);
                    true
                },
            )
        }));
        let panic = result.expect_err("the worker's panic");
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
        assert_eq!(message, Some("item 7"));
        assert_eq!(applied, (0..7).collect::<Vec<_>>());
    }
}
