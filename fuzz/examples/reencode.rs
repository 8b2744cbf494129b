//! Rewrites a Parquet file uncompressed and without dictionary encoding, so that a fuzzer's byte
//! mutations change row values instead of breaking Zstandard frames (fuzz/seeds/make-seeds.sh).
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example reencode -- IN.parquet OUT.parquet

use std::fs::File;

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: reencode IN.parquet OUT.parquet".into());
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(input)?)?;
    let schema = reader.schema().clone();
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .build();
    let mut writer = ArrowWriter::try_new(File::create(output)?, schema, Some(props))?;
    for batch in reader.build()? {
        writer.write(&batch?)?;
    }
    writer.close()?;
    Ok(())
}
