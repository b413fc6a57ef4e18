//! Throughput and memory of cleaning and of the batch pipeline (JSON files -> Delta).
//!
//! `cargo bench --bench pipeline` (env `PINPIPE_BENCH_POSTS`, default 333 334 posts =
//! ~1M records). Machines are noisy, so every figure is also printed as a ratio to a
//! baseline measured in the same run: parsing the same records into `serde_json::Value`.
//!
//! Then the shipped binary in its own process, with its heap settings: `pinpipe batch` with
//! the raw tables on and off and `pinpipe replay`, in `PINPIPE_BENCH_REPEAT` rounds
//! (default 3) whose order rotates, with each run's median records per CPU second, records
//! per second, peak RSS and bytes written. `PINPIPE_BENCH_KEEP=1` keeps the bench's folder
//! (input files, tables, the binary's logs).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use pinpipe::clean::Kind;
use pinpipe::emulate::Generator;
use pinpipe::sink::{TablesConfig, WriterConfig};
use pinpipe::sources::batch::{self, BatchOptions};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");

/// One run of the binary, as its round measured it.
struct Figures {
    per_cpu: f64,
    per_wall: f64,
    peak_rss_mb: f64,
    bytes: u64,
}

/// `pinpipe <args> --tables <dir>/<out> --no-progress` with the config file `config` and
/// the `env` overrides; its figures for `records` records. The tables it wrote are measured
/// and then removed.
fn run_bin(dir: &Path, config: &Path, args: &[&str], env: &[(&str, String)], out: &str, records: u64) -> Figures {
    let tables = dir.join(out);
    let log = dir.join(format!("{out}.log"));
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--tables")
        .arg(&tables)
        .arg("--no-progress")
        .env("PINPIPE_CONFIG", config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn pinpipe");
    let usage = support::watch(&mut child, out, Duration::from_secs(900));
    let wall = t.elapsed().as_secs_f64();
    assert!(usage.status.success(), "{out} failed: see {}", log.display());
    let bytes = support::dir_bytes(&tables);
    std::fs::remove_dir_all(&tables).expect("remove the run's tables");
    Figures {
        per_cpu: records as f64 / usage.cpu.max(0.01),
        per_wall: records as f64 / wall,
        peak_rss_mb: usage.peak_rss_mb,
        bytes,
    }
}

/// The binary's rounds (see the module docs). `input` holds the JSON files, `raw` the
/// tables whose raw tables the replay reads; both were written by the runs above.
fn binary_rounds(dir: &Path, input: &Path, raw: &Path, records: u64) {
    let repeat: usize = support::env_or("PINPIPE_BENCH_REPEAT", 3usize).max(1);
    // Defaults only: not the repository's config/pinpipe.toml, which the binary would
    // otherwise find in the bench's working folder.
    let config = dir.join("bench.toml");
    std::fs::write(&config, "").expect("config");
    let input = input.to_str().expect("utf-8 path");
    let raw_tables = raw.to_str().expect("utf-8 path").to_string();
    let runs = ["batch, raw off", "batch, raw on", "replay"];
    let mut figures: Vec<Vec<Figures>> = runs.iter().map(|_| Vec::new()).collect();
    for round in 0..repeat {
        for i in 0..runs.len() {
            let run = (i + round) % runs.len();
            let out = format!("bin-{run}-{round}");
            let f = match run {
                0 | 1 => run_bin(
                    dir,
                    &config,
                    &["batch", "--input", input],
                    &[("PINPIPE__RAW__ENABLED", (run == 1).to_string())],
                    &out,
                    records,
                ),
                _ => run_bin(
                    dir,
                    &config,
                    &["replay"],
                    &[("PINPIPE__TABLES__LOCATION", raw_tables.clone())],
                    &out,
                    records,
                ),
            };
            figures[run].push(f);
        }
    }
    let median = |run: usize, pick: fn(&Figures) -> f64| support::median(figures[run].iter().map(pick).collect());
    println!();
    println!("the binary, {records} records, medians of {repeat} rounds in rotated order:");
    println!(
        "{:<16} {:>16} {:>14} {:>14} {:>14}",
        "", "records/CPU s", "records/s", "peak RSS MiB", "MB written"
    );
    for (run, name) in runs.iter().enumerate() {
        println!(
            "{name:<16} {:>16.0} {:>14.0} {:>14.0} {:>14.1}",
            median(run, |f| f.per_cpu),
            median(run, |f| f.per_wall),
            median(run, |f| f.peak_rss_mb),
            median(run, |f| f.bytes as f64) / 1e6
        );
    }
    let cost = |pick: fn(&Figures) -> f64| (1.0 - median(1, pick) / median(0, pick)) * 100.0;
    println!(
        "raw tables' cost: {:.0}% of records per CPU s, {:.0}% of records/s; replay {:.2}x batch with raw tables (records/s)",
        cost(|f| f.per_cpu),
        cost(|f| f.per_wall),
        median(2, |f| f.per_wall) / median(1, |f| f.per_wall)
    );
}

fn main() {
    let posts: u64 = support::env_or("PINPIPE_BENCH_POSTS", 333_334);
    // End to end: files on disk -> pinpipe batch -> local Delta tables.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("raw");
    std::fs::create_dir_all(&input).expect("mkdir");
    let mut cfg = pinpipe::config::Config::default();
    // A pool this large makes every post distinct: no repeated strings flattering the
    // compression or the emulator's render cache.
    cfg.emulate.index_pool = 1 << 40;
    let tables = TablesConfig {
        location: dir.path().join("tables").to_str().expect("utf-8 path").into(),
        ..Default::default()
    };
    let summary = pinpipe::block_on(pinpipe::emulate::files::write(
        &cfg.emulate,
        &tables,
        input.to_str().expect("utf-8 path"),
        posts,
        None,
        false,
    ))
    .expect("emulate");
    let opts = BatchOptions {
        input: input.to_str().expect("utf-8 path").into(),
        kind: None,
        concurrency: cfg.batch.concurrency,
        batch_rows: cfg.batch.batch_rows,
        max_record_bytes: cfg.clean.max_record_bytes,
        progress: false,
    };
    let writer = WriterConfig::default();
    // The same input four ways: batch without the raw tables, batch with them (the
    // default), a replay of those raw tables into new clean tables, and batch with the raw
    // tables at the clean tables' zstd level (what `[raw] zstd_level` saves).
    let batch_into = |name: &str, raw: Option<i32>| {
        let tables = TablesConfig {
            location: dir.path().join(name).to_str().expect("utf-8 path").into(),
            ..Default::default()
        };
        let raw_cfg = pinpipe::sink::RawConfig {
            enabled: raw.is_some(),
            zstd_level: raw.unwrap_or(1),
            ..Default::default()
        };
        let t = Instant::now();
        let s = pinpipe::block_on(async {
            let writers = pinpipe::run::start_writers(&tables, &raw_cfg, &writer).await?;
            Ok::<_, anyhow::Error>(batch::run(&opts, &tables, &writers).await?)
        })
        .expect("batch run");
        (tables, s, t.elapsed().as_secs_f64())
    };
    let (_, s_noraw, secs_noraw) = batch_into("tables-noraw", None);
    let rss_noraw = peak_rss_mb();
    let raw_level = pinpipe::sink::RawConfig::default().zstd_level;
    let (tables, s, secs) = batch_into("tables", Some(raw_level));
    let e2e = s.records as f64 / secs;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let e2e_mbs = summary.bytes as f64 / 1e6 / secs;
    // Before the in-memory record set below exists: this is the pipeline's own peak.
    let rss = peak_rss_mb();
    let e2e_line = s.line();
    let dest = TablesConfig {
        location: dir.path().join("tables-replay").to_str().expect("utf-8 path").into(),
        ..Default::default()
    };
    let replay_opts = pinpipe::replay::ReplayOptions {
        kinds: Kind::ALL.to_vec(),
        from: None,
        to: None,
        batch_rows: cfg.batch.batch_rows,
        max_record_bytes: cfg.clean.max_record_bytes,
        memory_limit: 256 << 20,
        progress: false,
    };
    let t = Instant::now();
    let replayed = pinpipe::block_on(async {
        let raw = pinpipe::replay::open_raw(&tables, &Kind::ALL).await?;
        // As `pinpipe replay` does: clean and dead-letter tables only.
        let writers = pinpipe::sink::Writers::start(&dest, &writer, &Kind::ALL, None).await?;
        let r = pinpipe::replay::run(raw, &writers, &replay_opts).await?;
        Ok::<_, anyhow::Error>(r)
    })
    .expect("replay");
    let secs_replay = t.elapsed().as_secs_f64();
    assert_eq!(replayed.records, s.records, "replay read every raw record");
    let (_, s_z, secs_z) = batch_into("tables-raw-z", Some(writer.zstd_level));
    let bytes_of = |name: &str| support::dir_bytes(&dir.path().join(name));
    // The same posts the files above hold.
    let mut gen = Generator::from_config(&cfg.emulate).expect("emulator config");
    let mut records: Vec<(Kind, Vec<u8>)> = Vec::with_capacity(posts as usize * 3);
    for _ in 0..posts {
        let p = gen.next_post();
        for k in Kind::ALL {
            records.push((k, p.record(k).to_vec()));
        }
    }
    let n = records.len() as f64;
    let bytes: usize = records.iter().map(|(_, r)| r.len() + 1).sum();
    println!("records: {} ({:.1} MB of JSON)", records.len(), bytes as f64 / 1e6);

    // Baseline: a plain serde_json parse of every record, one core.
    let t = Instant::now();
    let mut sink = 0usize;
    for (_, r) in &records {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(r) {
            sink += v.as_object().map_or(0, |o| o.len());
        }
    }
    let base = n / t.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    println!("baseline serde_json::Value parse: {base:>12.0} records/s (1.00x)");

    // Cleaning into Arrow batches, one core.
    let t = Instant::now();
    let (rows, dead_rows) = support::clean_all(&records);
    let clean_rate = n / t.elapsed().as_secs_f64();
    println!("clean -> Arrow (1 core):          {clean_rate:>12.0} records/s ({:.2}x baseline); {rows} rows, {dead_rows} dead letters", clean_rate / base);

    println!(
        "batch JSON -> Delta (local, {cores} cores): {e2e:>8.0} records/s, {e2e_mbs:.1} MB/s of input ({:.2}x baseline, {:.0} records/s per core)",
        e2e / base,
        e2e / cores as f64
    );
    println!("  {e2e_line}");
    let noraw = s_noraw.records as f64 / secs_noraw;
    println!(
        "batch without raw tables:          {noraw:>12.0} records/s ({:.2}x baseline); raw tables cost {:.0}% of throughput",
        noraw / base,
        (1.0 - e2e / noraw) * 100.0
    );
    let z = s_z.records as f64 / secs_z;
    println!(
        "batch, raw tables at zstd {}:       {z:>12.0} records/s; raw tables cost {:.0}% of throughput; {:.1} MB written",
        writer.zstd_level,
        (1.0 - z / noraw) * 100.0,
        bytes_of("tables-raw-z") as f64 / 1e6
    );
    println!(
        "bytes written: {:.1} MB with raw tables (zstd {raw_level}), {:.1} MB without ({:.2}x); input {:.1} MB",
        bytes_of("tables") as f64 / 1e6,
        bytes_of("tables-noraw") as f64 / 1e6,
        bytes_of("tables") as f64 / bytes_of("tables-noraw").max(1) as f64,
        summary.bytes as f64 / 1e6
    );
    let replay_rate = replayed.records as f64 / secs_replay;
    println!(
        "replay raw -> Delta:               {replay_rate:>12.0} records/s ({:.2}x baseline, {:.2}x batch with raw)",
        replay_rate / base,
        replay_rate / e2e
    );
    println!("  {}", replayed.line());
    println!(
        "peak RSS of emulate + batch: {rss_noraw:.0} MB without raw tables, {rss:.0} MB with (process high-water mark)"
    );
    binary_rounds(dir.path(), &input, Path::new(&tables.location), s.records);
    if std::env::var_os("PINPIPE_BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}
