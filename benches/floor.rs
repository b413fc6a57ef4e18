//! The floor of the work, for `benches/compare.py`: the same raw JSON files that the
//! batch job reads, parsed with plain `serde_json::Value` (the least any JSON pipeline does
//! per record), and cleaned into Arrow batches by pinpipe's own cleaner. One thread, all
//! in memory, no I/O timed: what remains is the per-record CPU cost.
//!
//! `cargo bench --bench floor -- DIR` where DIR holds the Kafka Connect layout that
//! `pinpipe emulate --out DIR` writes (`topics/<prefix>.<kind>/partition=<p>/*.json`).
//! Prints one JSON object: records, bytes, valid_json, parse_seconds, clean_seconds,
//! clean_rows, dead_letters.

use std::path::{Path, PathBuf};
use std::time::Instant;

mod support;

use pinpipe::clean::Kind;

/// Every `*.json` file under `dir`, with the kind named by its topic folder's suffix.
fn files(dir: &Path, kind: Option<Kind>, out: &mut Vec<(Kind, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            // `topics/<prefix>.<kind>`: the suffix after the last dot names the kind.
            let k = name.rsplit('.').next().and_then(|s| s.parse().ok()).or(kind);
            files(&path, k, out)?;
        } else if name.ends_with(".json") {
            if let Some(k) = kind {
                out.push((k, path));
            }
        }
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument is the input folder.
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench floor -- DIR");
        std::process::exit(2);
    };
    let mut paths = Vec::new();
    if let Err(e) = files(Path::new(&dir), None, &mut paths) {
        eprintln!("reading {dir}: {e}");
        std::process::exit(1);
    }
    if paths.is_empty() {
        eprintln!("no topics/<prefix>.pin|geo|user/**/*.json files under {dir}");
        std::process::exit(1);
    }
    let mut records: Vec<(Kind, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    for (k, p) in &paths {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        bytes += data.len();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            records.push((*k, line.to_vec()));
        }
    }

    // Floor: a plain serde_json parse of every record, one thread.
    let t = Instant::now();
    let mut valid = 0usize;
    let mut fields = 0usize;
    for (_, r) in &records {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(r) {
            valid += 1;
            fields += v.as_object().map_or(0, |o| o.len());
        }
    }
    let parse_seconds = t.elapsed().as_secs_f64();
    std::hint::black_box(fields);

    // pinpipe's cleaner into Arrow batches, one thread.
    let t = Instant::now();
    let (rows, dead_letters) = support::clean_all(&records);
    let clean_seconds = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "records": records.len(),
            "bytes": bytes,
            "valid_json": valid,
            "parse_seconds": parse_seconds,
            "clean_seconds": clean_seconds,
            "clean_rows": rows,
            "dead_letters": dead_letters,
        })
    );
}
