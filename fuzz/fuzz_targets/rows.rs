//! The bundle's Parquet row reader (`bundle::read_rows_from`) on arbitrary bytes: an error or rows,
//! never a panic (but the parquet crate's own, see `ledger_fuzz::tolerating_parquet_panics`), a
//! hang or an unbounded allocation. Rows it reads write back (`RowWriter`) to a file that reads back
//! to the same rows.

#![no_main]

use std::path::Path;

use ledger::bundle::{Row, RowWriter, read_rows, read_rows_from};
use ledger_fuzz::{SCRATCH, tolerating_parquet_panics};
use libfuzzer_sys::fuzz_target;

/// Most rows written back per input (the writer is slower than the reader).
const MAX_ROUND_TRIP: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut rows = Vec::new();
    let read = tolerating_parquet_panics(|| {
        read_rows_from(
            bytes::Bytes::copy_from_slice(data),
            Path::new("events.parquet"),
            |row| {
                rows.push(row);
                Ok(())
            },
        )
    });
    let Some(Ok(count)) = read else {
        return;
    };
    assert_eq!(count, rows.len() as u64);
    if rows.len() <= MAX_ROUND_TRIP {
        round_trip(&rows);
    }
});

fn round_trip(rows: &[Row]) {
    let path = SCRATCH.path().join("rows.parquet");
    let mut writer = RowWriter::create(&path).expect("scratch file");
    for row in rows {
        writer.push(row.clone()).expect("a row read writes");
    }
    assert_eq!(writer.finish().expect("finishes"), rows.len() as u64);
    let mut again = Vec::new();
    read_rows(&path, |row| {
        again.push(row);
        Ok(())
    })
    .expect("written rows read back");
    assert_eq!(again, rows);
}
