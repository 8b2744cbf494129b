//! Order-keeping parallel map over a slice, for the per-row work of export and verify: each row's
//! parse, projections and hashes need nothing from its neighbours, so they run on every core while
//! the order-dependent work (proof paths, chain, sorts, Parquet) stays on one thread.
//!
//! Scoped threads per chunk rather than a pool crate: a chunk is thousands of rows (milliseconds
//! of work), so starting a thread per core per chunk costs well under 1 %.

/// `items.iter().map(f)` on up to `available_parallelism` (at most 16) scoped threads, results in
/// input order. Small inputs run on the calling thread.
pub fn map<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    if threads < 2 || items.len() < 256 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("parallel map thread panicked"))
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
            assert_eq!(
                squares,
                items.iter().map(|i| i * i).collect::<Vec<_>>(),
                "{n}"
            );
        }
    }
}
