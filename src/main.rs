//! The `pinpipe` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pinpipe::clean::Kind;
use pinpipe::config::Config;
use pinpipe::sink::Writers;
use pinpipe::sources::batch::{self, BatchOptions};

/// Warnings, minus two expected ones from deltalake: the "no files in log segment" error
/// it logs when a table is about to be created, and "no statistics for a binary column"
/// (the dead-letter `raw` column) on every flush.
const DEFAULT_LOG: &str = "warn,buoyant_kernel::snapshot::builder=off,deltalake_core::writer::stats=error";

#[derive(Parser)]
#[command(
    name = "pinpipe",
    version,
    about = "Clean pin/geo/user event streams into Delta Lake tables"
)]
struct Cli {
    /// Config file [default: config/pinpipe.toml when present]. Keys can be overridden
    /// with PINPIPE__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "PINPIPE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `pinpipe=debug`.
    #[arg(long, global = true, env = "PINPIPE_LOG", default_value = DEFAULT_LOG)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Target {
    Files,
    Kafka,
    Kinesis,
    Gateway,
}

#[derive(Subcommand)]
enum Command {
    /// Backfill raw JSON files (folder or s3:// prefix) into the Delta tables.
    Batch {
        /// Folder or s3://bucket/prefix with raw JSON [default: batch.input].
        #[arg(long)]
        input: Option<String>,
        /// Folder or s3://bucket/prefix of the tables [default: tables.location].
        #[arg(long)]
        tables: Option<String>,
        /// Kind of objects outside the Kafka Connect layout.
        #[arg(long)]
        kind: Option<Kind>,
        /// No progress bar (it is also hidden when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// Generate posts (pin, geo and user records sharing an index) as raw JSON files in the
    /// Kafka Connect S3 sink layout.
    Emulate {
        /// Number of posts (each is three records).
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Posts per second; unlimited when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Random seed [default: emulate.seed].
        #[arg(long)]
        seed: Option<u64>,
        /// Folder or s3://bucket/prefix to write to [default: batch.input].
        #[arg(long)]
        out: Option<String>,
        /// Where posts go: raw files (`--out`), the Kafka topics (`kafka.brokers`), the
        /// Kinesis streams (`kinesis.endpoint`/`region`, PutRecords in batches of 500), or a
        /// `pinpipe gateway` at `--url` (one request per record, the seed's shapes).
        #[arg(long, value_enum, default_value = "files")]
        to: Target,
        /// Base URL of the gateway (`--to gateway`), e.g. http://127.0.0.1:8082.
        #[arg(long, required_if_eq("to", "gateway"))]
        url: Option<String>,
        /// The gateway API to post to (`--to gateway`).
        #[arg(long, value_enum, default_value = "kafka")]
        api: pinpipe::emulate::gateway::GatewayApi,
        /// Bearer token for the gateway.
        #[arg(long, env = "PINPIPE_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Requests in flight at once (`--to gateway`).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        no_progress: bool,
    },
    /// Consume the Kafka topics and/or the Kinesis streams (`kafka.enabled`,
    /// `kinesis.enabled`) into the Delta tables until SIGINT/SIGTERM.
    Run {
        /// Folder or s3:// URI of the tables [default: tables.location].
        #[arg(long)]
        tables: Option<String>,
        /// Stop (drain, commit, leave the group) once this process committed this many rows
        /// (clean and dead-letter together).
        #[arg(long)]
        stop_after: Option<u64>,
        #[arg(long)]
        no_progress: bool,
    },
    /// The embedded default: an in-process Kafka-protocol broker (librdkafka's mock
    /// cluster), the emulator producing to it and the processor writing local Delta
    /// tables. No cloud account, no Docker.
    Demo {
        /// Number of posts (each is three records).
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Partitions per topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Folder or s3:// URI of the tables [default: tables.location].
        #[arg(long)]
        tables: Option<String>,
    },
    /// Answer the old batch notebook's eight questions over the clean tables (SQL on
    /// DataFusion). Prints aligned tables, or writes q1 ... q8 files with `--out`.
    Report {
        /// Folder or s3:// URI of the tables [default: tables.location].
        #[arg(long)]
        tables: Option<String>,
        /// Only this question (1..=8; 3 gives q3a and q3b).
        #[arg(long)]
        question: Option<u8>,
        #[arg(long, value_enum, default_value = "table")]
        format: pinpipe::report::Format,
        /// Folder for q1.<ext> ... q8.<ext> instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Memory the query engine may use (MiB); sorts and aggregations spill to the temp
        /// folder beyond it.
        #[arg(long, default_value_t = pinpipe::report::DEFAULT_MEMORY_LIMIT >> 20)]
        memory_limit_mb: usize,
    },
    /// Compact small files, vacuum unreferenced ones and write Delta checkpoints, on every
    /// table. Safe while `pinpipe run` appends.
    Maintain {
        /// Folder or s3:// URI of the tables [default: tables.location].
        #[arg(long)]
        tables: Option<String>,
        /// Compaction's target file size in MiB.
        #[arg(long, default_value_t = 128)]
        target_size_mb: u64,
        /// Vacuum keeps the files of versions younger than this many hours (time travel
        /// to older versions stops working).
        #[arg(long, default_value_t = 168)]
        retention_hours: u64,
        #[arg(long)]
        no_optimize: bool,
        #[arg(long)]
        no_vacuum: bool,
        #[arg(long)]
        no_checkpoint: bool,
    },
    /// Serve the ingest gateway (Kafka REST proxy v2 and Kinesis-style routes) on
    /// `gateway.listen` until SIGINT/SIGTERM.
    Gateway {
        /// host:port to listen on [default: gateway.listen].
        #[arg(long)]
        listen: Option<String>,
    },
    /// Load and validate the configuration, then print it.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinpipe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_batch(cfg: &Config, progress: bool) -> anyhow::Result<()> {
    let opts = BatchOptions {
        input: cfg.batch.input.clone(),
        kind: cfg.batch.kind,
        concurrency: cfg.batch.concurrency,
        batch_rows: cfg.batch.batch_rows,
        max_record_bytes: cfg.clean.max_record_bytes,
        progress,
    };
    let summary = pinpipe::block_on(async {
        let writers = Writers::start(&cfg.tables, &cfg.writer, &Kind::ALL, None).await?;
        anyhow::Ok(batch::run(&opts, &cfg.tables, &writers).await?)
    })?;
    println!("{}", summary.line());
    print_tables(cfg)
}

fn print_tables(cfg: &Config) -> anyhow::Result<()> {
    let root = cfg.tables.root_url()?;
    let names: Vec<String> = Kind::ALL
        .iter()
        .flat_map(|k| [k.to_string(), format!("{k}_dead_letter")])
        .collect();
    println!("tables under {root}: {}", names.join(", "));
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", toml::to_string_pretty(&cfg).context("printing config")?);
            Ok(())
        }
        Command::Batch {
            input,
            tables,
            kind,
            no_progress,
        } => {
            if let Some(t) = tables {
                cfg.tables.location = t;
            }
            if let Some(i) = input {
                cfg.batch.input = i;
            }
            if kind.is_some() {
                cfg.batch.kind = kind;
            }
            cfg.validate()?;
            run_batch(&cfg, !no_progress)
        }
        Command::Demo {
            count,
            partitions,
            tables,
        } => {
            if let Some(t) = tables {
                cfg.tables.location = t;
            }
            cfg.validate()?;
            anyhow::ensure!(partitions > 0, "--partitions must be at least 1");
            let summary = pinpipe::block_on(pinpipe::demo::demo(&mut cfg, count, partitions))?;
            println!("{}", summary.line());
            print_tables(&cfg)
        }
        Command::Run {
            tables,
            stop_after,
            no_progress,
        } => {
            if let Some(t) = tables {
                cfg.tables.location = t;
            }
            cfg.validate()?;
            let summary = pinpipe::block_on(pinpipe::demo::run(&cfg, stop_after, !no_progress))?;
            println!("{}", summary.line());
            print_tables(&cfg)
        }
        Command::Report {
            tables,
            question,
            format,
            out,
            memory_limit_mb,
        } => {
            if let Some(t) = tables {
                cfg.tables.location = t;
            }
            cfg.validate()?;
            let questions = pinpipe::report::select(question)?;
            let started = std::time::Instant::now();
            anyhow::ensure!(memory_limit_mb >= 64, "--memory-limit-mb must be at least 64");
            let done = pinpipe::block_on_tokio(pinpipe::report::run(
                &cfg.tables,
                &questions,
                format,
                out.as_deref(),
                memory_limit_mb << 20,
            ))?;
            if let Some(dir) = out {
                let rows: Vec<String> = done.iter().map(|(q, n)| format!("{q}={n}")).collect();
                println!(
                    "report: {} answers in {:.2}s to {} (rows: {})",
                    done.len(),
                    started.elapsed().as_secs_f64(),
                    dir.display(),
                    rows.join(" ")
                );
            }
            Ok(())
        }
        Command::Maintain {
            tables,
            target_size_mb,
            retention_hours,
            no_optimize,
            no_vacuum,
            no_checkpoint,
        } => {
            if let Some(t) = tables {
                cfg.tables.location = t;
            }
            cfg.validate()?;
            anyhow::ensure!(target_size_mb > 0, "--target-size-mb must be at least 1");
            let opts = pinpipe::maintain::MaintainOptions {
                target_size: target_size_mb << 20,
                retention: std::time::Duration::from_secs(retention_hours * 3600),
                optimize: !no_optimize,
                vacuum: !no_vacuum,
                checkpoint: !no_checkpoint,
                ..Default::default()
            };
            let reports = pinpipe::block_on_tokio(pinpipe::maintain::run(&cfg.tables, &opts))?;
            if reports.is_empty() {
                println!("maintain: no tables under {}", cfg.tables.location);
            }
            for r in reports {
                println!("{}", r.line());
            }
            Ok(())
        }
        Command::Gateway { listen } => {
            if let Some(l) = listen {
                cfg.gateway.listen = l;
            }
            cfg.validate()?;
            let stop = pinpipe::demo::shutdown_signal();
            pinpipe::block_on(pinpipe::gateway::run(&cfg.gateway, &cfg.kafka, &cfg.kinesis, stop))?;
            Ok(())
        }
        Command::Emulate {
            count,
            rate,
            seed,
            out,
            to,
            url,
            api,
            token,
            concurrency,
            no_progress,
        } => {
            if let Some(s) = seed {
                cfg.emulate.seed = s;
            }
            if let Some(r) = rate {
                anyhow::ensure!(
                    r.is_finite() && r > 0.0,
                    "--rate must be a positive number of posts per second"
                );
            }
            match to {
                Target::Files => {
                    let out = out.unwrap_or_else(|| cfg.batch.input.clone());
                    let summary = pinpipe::block_on(pinpipe::emulate::files::write(
                        &cfg.emulate,
                        &cfg.tables,
                        &out,
                        count,
                        rate,
                        !no_progress,
                    ))?;
                    println!("{}", summary.line());
                }
                Target::Kafka => {
                    let started = std::time::Instant::now();
                    let n = pinpipe::block_on(pinpipe::emulate::kafka::produce(
                        &cfg.emulate,
                        &cfg.kafka,
                        count,
                        rate,
                        !no_progress,
                        None,
                    ))?;
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "emulate: {count} posts, {n} records to {} in {secs:.2}s ({:.0} records/s)",
                        cfg.kafka.brokers,
                        n as f64 / secs.max(1e-9)
                    );
                }
                Target::Gateway => {
                    use pinpipe::emulate::gateway::{GatewayApi, GatewayTarget};
                    anyhow::ensure!((1..=1024).contains(&concurrency), "--concurrency must be in 1..=1024");
                    let pick = |map: std::collections::BTreeMap<String, Kind>, what: &str| {
                        Kind::ALL.map(|k| {
                            let name = map.iter().find(|(_, v)| **v == k).map(|(n, _)| n.clone());
                            name.map(|n| (k, n))
                                .ok_or_else(|| anyhow::anyhow!("no {what} maps to kind {k}"))
                        })
                    };
                    let names = match api {
                        GatewayApi::Kafka => pick(cfg.kafka.topic_map(), "topic in [kafka.topics]"),
                        GatewayApi::Kinesis => pick(cfg.kinesis.stream_map(), "stream in [kinesis.streams]"),
                    };
                    let [a, b, c] = names;
                    let target = GatewayTarget {
                        url: url.unwrap_or_default(),
                        api,
                        token,
                        concurrency,
                        names: [a?, b?, c?],
                    };
                    let started = std::time::Instant::now();
                    let s = pinpipe::block_on(pinpipe::emulate::gateway::post(
                        &cfg.emulate,
                        &target,
                        count,
                        rate,
                        !no_progress,
                    ))?;
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "emulate: {count} posts, {} records acknowledged by {} in {secs:.2}s ({:.0} records/s), \
                         {} refused as malformed (400/422), {} retried requests",
                        s.acked,
                        target.url,
                        s.acked as f64 / secs.max(1e-9),
                        s.refused,
                        s.retries
                    );
                }
                Target::Kinesis => {
                    let started = std::time::Instant::now();
                    let n = pinpipe::block_on(pinpipe::emulate::kinesis::put(
                        &cfg.emulate,
                        &cfg.kinesis,
                        count,
                        rate,
                        !no_progress,
                    ))?;
                    let secs = started.elapsed().as_secs_f64();
                    let streams: Vec<String> = cfg.kinesis.stream_map().into_keys().collect();
                    println!(
                        "emulate: {count} posts, {n} records to {} in {secs:.2}s ({:.0} records/s)",
                        streams.join(","),
                        n as f64 / secs.max(1e-9)
                    );
                }
            }
            Ok(())
        }
    }
}
