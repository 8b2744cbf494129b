//! An external merge sort: records are pushed one at a time, sorted in memory up to a byte budget,
//! spilled to disk as sorted runs, and read back merged. It is what keeps export, verify and the
//! server's manifest check in bounded memory whatever the size of the period: every per-request
//! join (findings, context lookups) and every exact percentile goes through one.
//!
//! Owns: run files in a private temp dir (removed on drop) and their framing. Must not touch:
//! anything outside that dir.
//!
//! Why by hand and not a crate: the callers produce records from callbacks (Parquet readers, the
//! log's row stream) and need every I/O error surfaced, so the API is `push` then `finish`; the
//! external-sort crates take an iterator and stop on the first error silently or by panic. The
//! whole of it is the ~150 lines below.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A record that can be sorted externally: an order, a byte encoding, and a size estimate.
pub trait Record: Ord + Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes one record from the exact bytes [`Record::encode`] wrote.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Approximate bytes the record holds in memory (for the budget).
    fn mem_size(&self) -> usize;
}

/// Default in-memory budget per sorter: runs of this size are spilled.
pub const DEFAULT_BUDGET: usize = 32 << 20;

/// Runs merged at once; more runs are first merged into longer runs, so open files stay bounded.
const FAN_IN: usize = 64;

/// Pushes records, then yields them in order. Runs live in a temp dir removed on drop.
pub struct Sorter<T: Record> {
    dir: tempfile::TempDir,
    buffer: Vec<T>,
    buffered_bytes: usize,
    budget: usize,
    runs: Vec<PathBuf>,
    count: u64,
}

impl<T: Record> Sorter<T> {
    /// A sorter spilling into a new temp dir under `parent` (or the system temp dir), keeping at
    /// most about `budget` bytes of records in memory.
    ///
    /// # Errors
    /// If the temp dir cannot be created.
    pub fn new(parent: Option<&Path>, budget: usize) -> io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".ledger-sort-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p)?,
            None => builder.tempdir()?,
        };
        Ok(Self {
            dir,
            buffer: Vec::new(),
            buffered_bytes: 0,
            budget: budget.max(1),
            runs: Vec::new(),
            count: 0,
        })
    }

    /// Records pushed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds one record, spilling a sorted run when the budget is reached.
    ///
    /// # Errors
    /// If a run cannot be written.
    pub fn push(&mut self, record: T) -> io::Result<()> {
        self.buffered_bytes += record.mem_size() + std::mem::size_of::<T>();
        self.buffer.push(record);
        self.count += 1;
        if self.buffered_bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Takes over `other`'s records: its runs move into this sorter's dir (a rename: both must
    /// spill under the same parent dir, as a [`crate::summary::SummaryBuilder`]'s sorters do),
    /// its buffered records are pushed here.
    ///
    /// # Errors
    /// If a run cannot be moved or written.
    pub fn append(&mut self, mut other: Sorter<T>) -> io::Result<()> {
        let buffer = std::mem::take(&mut other.buffer);
        for run in std::mem::take(&mut other.runs) {
            let path = self.next_run_path();
            std::fs::rename(&run, &path)?;
            self.runs.push(path);
        }
        self.count += other.count - buffer.len() as u64;
        for record in buffer {
            self.push(record)?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buffered_bytes = 0;
        self.buffer.sort_unstable();
        let path = self.next_run_path();
        // Drained, not taken: the next run fills the same allocation instead of growing a new
        // one by doubling (a copy of every record so far at each step, and fresh pages).
        write_run(&path, self.buffer.drain(..).map(Ok))?;
        self.runs.push(path);
        Ok(())
    }

    fn next_run_path(&self) -> PathBuf {
        self.dir.path().join(format!("run-{}", self.runs.len()))
    }

    /// All records in order.
    ///
    /// # Errors
    /// If a run cannot be written or read back.
    pub fn finish(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.sort_unstable();
            return Ok(Sorted {
                inner: Inner::Memory(buffer.into_iter()),
                _dir: self.dir,
            });
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        // Merge in rounds until one merge can take every run.
        let mut runs = std::mem::take(&mut self.runs);
        let mut round = 0;
        while runs.len() > FAN_IN {
            let mut next = Vec::new();
            for (i, group) in runs.chunks(FAN_IN).enumerate() {
                let path = self.dir.path().join(format!("merge-{round}-{i}"));
                write_run(&path, Merge::<T>::open(group)?)?;
                for done in group {
                    std::fs::remove_file(done)?;
                }
                next.push(path);
            }
            runs = next;
            round += 1;
        }
        Ok(Sorted {
            inner: Inner::Merge(Merge::open(&runs)?),
            _dir: self.dir,
        })
    }
}

fn write_run<T: Record>(
    path: &Path,
    records: impl Iterator<Item = io::Result<T>>,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    let mut bytes = Vec::new();
    for record in records {
        bytes.clear();
        record?.encode(&mut bytes);
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&bytes)?;
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

struct RunReader {
    input: BufReader<File>,
    bytes: Vec<u8>,
}

impl RunReader {
    fn next<T: Record>(&mut self) -> io::Result<Option<T>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        self.bytes.resize(u32::from_le_bytes(len) as usize, 0);
        self.input.read_exact(&mut self.bytes)?;
        T::decode(&self.bytes)
            .map(Some)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt sort run"))
    }
}

/// A heap entry: the smallest record first, ties by run (stable across runs).
struct Head<T>(T, usize);

impl<T: Ord> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T: Ord> Eq for Head<T> {}
impl<T: Ord> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

struct Merge<T> {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<Head<T>>>,
}

impl<T: Record> Merge<T> {
    fn open(runs: &[PathBuf]) -> io::Result<Self> {
        let mut merge = Self {
            readers: Vec::with_capacity(runs.len()),
            heap: BinaryHeap::with_capacity(runs.len()),
        };
        for (i, path) in runs.iter().enumerate() {
            let mut reader = RunReader {
                input: BufReader::with_capacity(1 << 16, File::open(path)?),
                bytes: Vec::new(),
            };
            if let Some(first) = reader.next()? {
                merge.heap.push(Reverse(Head(first, i)));
            }
            merge.readers.push(reader);
        }
        Ok(merge)
    }
}

impl<T: Record> Iterator for Merge<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse(Head(record, run)) = self.heap.pop()?;
        match self.readers[run].next() {
            Ok(Some(following)) => self.heap.push(Reverse(Head(following, run))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(record))
    }
}

enum Inner<T> {
    Memory(std::vec::IntoIter<T>),
    Merge(Merge<T>),
}

/// The records of a [`Sorter`], in order.
pub struct Sorted<T: Record> {
    inner: Inner<T>,
    _dir: tempfile::TempDir,
}

impl<T: Record> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Memory(records) => records.next().map(Ok),
            Inner::Merge(merge) => merge.next(),
        }
    }
}

impl Record for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_le_bytes(bytes.try_into().ok()?))
    }
    fn mem_size(&self) -> usize {
        0
    }
}

impl Record for i64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_le_bytes(bytes.try_into().ok()?))
    }
    fn mem_size(&self) -> usize {
        0
    }
}

impl Record for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Self::from_utf8(bytes.to_vec()).ok()
    }
    fn mem_size(&self) -> usize {
        self.capacity()
    }
}

/// Appends a length-prefixed byte string (for [`Record`] encodings).
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads what [`put_bytes`] wrote, advancing `input`.
pub fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let bytes = input.get(4..4 + len)?;
    *input = &input[4 + len..];
    Some(bytes)
}

/// Reads a fixed 8-byte little-endian value, advancing `input`.
pub fn take_u64(input: &mut &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(input.get(..8)?.try_into().ok()?);
    *input = &input[8..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_runs_merge_into_order_like_an_in_memory_sort() {
        // A tiny budget forces one run per few records, and over FAN_IN runs a second merge round.
        let mut sorter = Sorter::<u64>::new(None, 64).unwrap();
        let mut want = Vec::new();
        let mut x: u64 = 12_345;
        for _ in 0..5_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            sorter.push(x % 1_000).unwrap();
            want.push(x % 1_000);
        }
        assert!(
            sorter.runs.len() > FAN_IN,
            "the test must exercise merge rounds"
        );
        want.sort_unstable();
        let got: Vec<u64> = sorter.finish().unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn strings_round_trip_in_memory_and_spilled() {
        for budget in [1 << 20, 1] {
            let mut sorter = Sorter::<String>::new(None, budget).unwrap();
            for s in ["pear", "", "apple", "é", "apple"] {
                sorter.push(s.to_owned()).unwrap();
            }
            let got: Vec<String> = sorter.finish().unwrap().map(Result::unwrap).collect();
            assert_eq!(got, ["", "apple", "apple", "pear", "é"]);
        }
    }

    #[test]
    fn an_appended_sorter_brings_its_runs_and_its_buffer() {
        // Budgets that spill (some runs plus a buffer) and that never spill, on either side.
        for (a_budget, b_budget) in [(64, 64), (1 << 20, 64), (64, 1 << 20), (1 << 20, 1 << 20)] {
            let mut a = Sorter::<u64>::new(None, a_budget).unwrap();
            let mut b = Sorter::<u64>::new(None, b_budget).unwrap();
            let mut want = Vec::new();
            for i in 0..500u64 {
                let x = (i * 7_919) % 1_000;
                if i % 3 == 0 { b.push(x) } else { a.push(x) }.unwrap();
                want.push(x);
            }
            a.append(b).unwrap();
            assert_eq!(a.len(), 500);
            want.sort_unstable();
            let got: Vec<u64> = a.finish().unwrap().map(Result::unwrap).collect();
            assert_eq!(got, want, "budgets {a_budget}, {b_budget}");
        }
    }
}
