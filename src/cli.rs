//! The command line's shape: every subcommand and flag (clap derive), apart from what the
//! commands do with them (`main.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pinpipe::clean::Kind;

#[derive(Parser)]
#[command(
    name = "pinpipe",
    version,
    about = "Clean pin/geo/user event streams into Delta Lake tables"
)]
pub struct Cli {
    /// Config file [default: config/pinpipe.toml when present]. Keys can be overridden
    /// with PINPIPE__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "PINPIPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `pinpipe=debug`, over the
    /// config's `log.level` [default: warnings].
    #[arg(long, global = true, env = "PINPIPE_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Target {
    Files,
    Kafka,
    Kinesis,
    Gateway,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Generate posts (pin, geo and user records sharing an index, the seed's shapes with a
    /// share of broken records) and send them: raw JSON files in the Kafka Connect S3 sink
    /// layout, the Kafka topics, the Kinesis streams, or a `pinpipe gateway`.
    Emulate(EmulateArgs),
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
        /// No live progress line (it is also hidden when stderr is not a terminal).
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
    /// Rebuild the clean and dead-letter tables from the raw tables (after a cleaning rule
    /// changed), into a new folder beside the live tables unless --tables or --in-place.
    Replay(ReplayArgs),
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
        /// Skip compaction (OPTIMIZE).
        #[arg(long)]
        no_optimize: bool,
        /// Skip vacuum (files of older versions stay).
        #[arg(long)]
        no_vacuum: bool,
        /// Skip writing a Delta checkpoint.
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
    /// Load and validate the configuration, then print it (secrets shown as "***").
    CheckConfig,
    /// One screen of state: per table its version, rows, files, bytes and last commit; per
    /// Kafka partition or Kinesis shard the position stored in the tables, the broker's
    /// end, the lag and the lease; dead letters by reason. Exits 2 when a table's last
    /// commit is older than --stale-after while its source has records waiting.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Folder or s3:// URI of the tables [default: tables.location].
    #[arg(long)]
    pub tables: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: StatusFormat,
    /// A table whose last commit is older than this while records wait is stale (exit 2).
    #[arg(long, default_value = "5m", value_parser = pinpipe::status::parse_duration)]
    pub stale_after: std::time::Duration,
    /// Dead letters are counted over the files committed in this window.
    #[arg(long, default_value = "1h", value_parser = pinpipe::status::parse_duration)]
    pub dead_letter_window: std::time::Duration,
    /// Bound of each broker or stream call; a broker that does not answer is shown as unknown.
    #[arg(long, default_value = "3s", value_parser = pinpipe::status::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// `emulate --concurrency` when not given.
pub const DEFAULT_CONCURRENCY: usize = 16;

#[derive(clap::Args)]
pub struct EmulateArgs {
    /// Number of posts (each is three records).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Posts per second; unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Random seed [default: emulate.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Folder or s3://bucket/prefix to write to (`--to files`) [default: batch.input].
    #[arg(long)]
    pub out: Option<String>,
    /// Where posts go: raw files (`--out`), the Kafka topics (`kafka.brokers`), the
    /// Kinesis streams (`kinesis.endpoint`/`region`, PutRecords in batches of 500), or a
    /// `pinpipe gateway` at `--url` (one request per record, the seed's shapes).
    #[arg(long, value_enum, default_value = "files")]
    pub to: Target,
    /// Base URL of the gateway (`--to gateway`), e.g. http://127.0.0.1:8082.
    #[arg(long, required_if_eq("to", "gateway"))]
    pub url: Option<String>,
    /// The gateway API to post to (`--to gateway`).
    #[arg(long, value_enum, default_value = "kafka")]
    pub api: pinpipe::emulate::gateway::GatewayApi,
    /// Bearer token for the gateway.
    #[arg(long, env = "PINPIPE_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Requests in flight at once (`--to gateway`).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl Command {
    /// The `--tables` override, for the commands that have one.
    pub fn tables(&self) -> Option<&str> {
        match self {
            Command::Batch { tables, .. }
            | Command::Run { tables, .. }
            | Command::Demo { tables, .. }
            | Command::Report { tables, .. }
            | Command::Maintain { tables, .. } => tables.as_deref(),
            Command::Status(a) => a.tables.as_deref(),
            // Replay's --tables is its destination, not the live tables.
            Command::Emulate(_) | Command::Gateway { .. } | Command::CheckConfig | Command::Replay(_) => None,
        }
    }
}

/// `pinpipe replay`'s flags.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Only this kind [default: all three].
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Destination folder or s3:// URI [default: <tables.location>-replay-<time>].
    #[arg(long)]
    pub tables: Option<String>,
    /// Write into the live tables themselves (stop `pinpipe run` first).
    #[arg(long, conflicts_with = "tables")]
    pub in_place: bool,
    /// Only raw records ingested on or after this date (UTC, YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Only raw records ingested on or before this date (UTC, YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// Memory the sort of the raw records may use (MiB); beyond it, it spills to the temp
    /// folder (zstd-compressed).
    #[arg(long, default_value_t = pinpipe::report::DEFAULT_MEMORY_LIMIT >> 20)]
    pub memory_limit_mb: usize,
    /// No progress line (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}
