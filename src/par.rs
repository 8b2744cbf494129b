//! Order-keeping parallel maps over a slice or a vector, for the per-row work of export and
//! verify: each row's parse, projections and hashes need nothing from its neighbours, so they run
//! on every core while the order-dependent work (proof paths, chain, sorts, Parquet) stays on one
//! thread.
//!
//! Scoped threads per chunk rather than a pool crate: a chunk is thousands of rows (milliseconds
//! of work), so starting a thread per core per chunk costs well under 1 %.

/// Threads to use: `available_parallelism`, at most 16.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// `items.iter().map(f)` on up to [`threads`] scoped threads, results in input order (they may
/// borrow from `items`). Small inputs run on the calling thread.
pub fn map<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    map_owned(items.iter().collect(), f)
}

/// `items.into_iter().map(f)` on up to [`threads`] scoped threads, results in input order: for
/// an `f` that keeps its item (no copy of each). Small inputs run on the calling thread.
pub fn map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    map_parts(items, |part| part.into_iter().map(&f).collect::<Vec<_>>())
        .into_iter()
        .flatten()
        .collect()
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

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_on_every_path() {
        for n in [0usize, 1, 255, 256, 4_097, 10_000] {
            let items: Vec<u64> = (0..n as u64).collect();
            let squares = super::map(&items, |i| i * i);
            let want = items.iter().map(|i| i * i).collect::<Vec<_>>();
            assert_eq!(squares, want, "{n}");
            assert_eq!(super::map_owned(items.clone(), |i| i * i), want, "{n}");
            let parts = super::map_parts(items, |part| part);
            assert!(parts.len() <= super::threads().max(1), "{n}");
            assert_eq!(parts.concat(), (0..n as u64).collect::<Vec<_>>(), "{n}");
        }
    }
}
