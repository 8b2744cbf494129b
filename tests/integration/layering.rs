//! The shape of the crate is checked, not only described: `core` stays pure and only `store` names
//! RocksDB.

use std::path::{Path, PathBuf};

pub(crate) fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn core_imports_no_io_crate() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let files = rust_files(&core);
    assert!(files.len() >= 5);
    let banned = [
        "tokio",
        "rocksdb",
        "axum",
        "arrow",
        "parquet",
        "std::fs",
        "std::net",
        "std::env",
        "SystemTime",
        "Instant",
        "getrandom",
        "rand::",
        "reqwest",
        "crate::store",
        "crate::sequencer",
        "crate::http",
    ];
    for file in files {
        // Code only: doc comments may name what the module must not touch.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in banned {
            assert!(!text.contains(word), "{} names {word}", file.display());
        }
    }
}

#[test]
fn only_store_names_rocksdb() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&src) {
        if file.ends_with("store.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("rocksdb::"),
            "{} names rocksdb",
            file.display()
        );
    }
}
