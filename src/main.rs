//! The `pinpipe` command line: what each subcommand does ([`cli`] has their flags).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use pinpipe::clean::Kind;
use pinpipe::config::Config;
use pinpipe::run::RunOptions;
use pinpipe::sink::Writers;
use pinpipe::sources::batch::{self, BatchOptions, Input};

use cli::{Cli, Command, EmulateArgs, ReplayArgs, StatusArgs, StatusFormat, Target, DEFAULT_CONCURRENCY};

fn main() -> ExitCode {
    // Before any thread or large buffer exists (src/memory.rs says why).
    pinpipe::memory::bound_heap();
    let cli = Cli::parse();
    // The config chooses the log format, so it is read before anything logs; a config
    // that does not load is reported below with the default logger.
    let cfg = Config::load(cli.config.as_deref());
    let log = cfg.as_ref().map(|c| c.log.clone()).unwrap_or_default();
    let mut secrets = cfg.as_ref().map(Config::secrets).unwrap_or_default();
    // `emulate --to gateway`'s token may come from the environment rather than the config.
    secrets.extend(std::env::var("PINPIPE_GATEWAY_TOKEN"));
    pinpipe::logging::init(&log, cli.log.as_deref(), secrets);
    match cfg.map_err(anyhow::Error::from).and_then(|cfg| run(cli, cfg)) {
        Ok(code) => code,
        // `report | head` closed stdout: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinpipe: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: most of pinpipe's errors already
/// quote their source in their own message, so a cause whose text the line holds already
/// is not repeated.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = one_line(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A multi-line message (a TOML parse error draws the spot) as one line: its text lines
/// joined, the drawing left out.
fn one_line(text: &str) -> String {
    let drawing = |l: &str| {
        let t = l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        t.starts_with('|')
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !drawing(l))
        .collect();
    lines.join(": ")
}

/// Whether the error is a write to a closed pipe (stdout of `pinpipe report | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli, mut cfg: Config) -> anyhow::Result<ExitCode> {
    if let Some(t) = cli.command.tables() {
        cfg.tables.location = t.to_string();
    }
    if let Command::Status(args) = &cli.command {
        cfg.validate()?;
        return run_status(&cfg, args);
    }
    run_command(cfg, cli.command).map(|()| ExitCode::SUCCESS)
}

/// `pinpipe status`: prints what it could read (unknown parts say why) and exits 2 when a
/// table is stale.
fn run_status(cfg: &Config, a: &StatusArgs) -> anyhow::Result<ExitCode> {
    let opts = pinpipe::status::StatusOptions {
        stale_after: a.stale_after,
        dead_letter_window: a.dead_letter_window,
        timeout: a.timeout,
    };
    let status = pinpipe::block_on_tokio(pinpipe::status::collect(cfg, &opts));
    let text = match a.format {
        StatusFormat::Json => status.to_json(),
        StatusFormat::Table => status.to_table(),
    };
    use std::io::Write as _;
    writeln!(std::io::stdout(), "{}", text.trim_end())?;
    Ok(ExitCode::from(status.exit_code()))
}

fn run_command(mut cfg: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig => {
            print!(
                "{}",
                toml::to_string_pretty(&cfg.redacted()).context("printing config")?
            );
            Ok(())
        }
        Command::Batch {
            input,
            kind,
            no_progress,
            ..
        } => {
            cfg.batch.input = input.unwrap_or(cfg.batch.input);
            cfg.batch.kind = kind.or(cfg.batch.kind);
            cfg.validate()?;
            run_batch(&cfg, !no_progress)
        }
        Command::Demo { count, partitions, .. } => {
            cfg.validate()?;
            anyhow::ensure!(partitions > 0, "--partitions must be at least 1");
            let summary = pinpipe::block_on(pinpipe::demo::demo(cfg.run_config(), &cfg.emulate, count, partitions))?;
            print_tables(&cfg)?;
            println!("{}", summary.text(&cfg.tables.location));
            Ok(())
        }
        Command::Run {
            stop_after,
            no_progress,
            ..
        } => {
            cfg.validate()?;
            let opts = RunOptions {
                stop_after,
                progress: !no_progress,
            };
            let summary = pinpipe::block_on(pinpipe::run::run(&cfg.run_config(), opts))?;
            println!("{}", summary.line());
            print_tables(&cfg)
        }
        Command::Report {
            question,
            format,
            out,
            memory_limit_mb,
            ..
        } => {
            cfg.validate()?;
            run_report(&cfg, question, format, out, memory_limit_mb)
        }
        Command::Maintain {
            target_size_mb,
            retention_hours,
            no_optimize,
            no_vacuum,
            no_checkpoint,
            ..
        } => {
            cfg.validate()?;
            let opts = pinpipe::maintain::MaintainOptions {
                target_size: mib("--target-size-mb", target_size_mb, 1)?,
                retention: hours("--retention-hours", retention_hours)?,
                optimize: !no_optimize,
                vacuum: !no_vacuum,
                checkpoint: !no_checkpoint,
                raw_retention_days: cfg.raw.retention_days,
                writer: cfg.writer.clone(),
                raw_writer: cfg.raw.writer(&cfg.writer),
                ..Default::default()
            };
            run_maintain(&cfg, &opts)
        }
        Command::Gateway { listen } => {
            if let Some(l) = listen {
                cfg.gateway.listen = l;
            }
            cfg.validate()?;
            let stop = pinpipe::shutdown::signal();
            pinpipe::block_on(pinpipe::gateway::run(&cfg.gateway, &cfg.kafka, &cfg.kinesis, stop))?;
            Ok(())
        }
        Command::Emulate(args) => run_emulate(&mut cfg, args),
        Command::Replay(args) => {
            cfg.validate()?;
            run_replay(&cfg, args)
        }
        Command::Status(_) => unreachable!("handled by run"),
    }
}

/// `n` hours, refusing a count too large for a duration.
fn hours(flag: &str, n: u64) -> anyhow::Result<std::time::Duration> {
    n.checked_mul(3600)
        .map(std::time::Duration::from_secs)
        .with_context(|| format!("{flag} {n} is too large"))
}

/// `n` MiB in bytes, refusing values below `min` or too large to count in bytes.
fn mib(flag: &str, n: u64, min: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(n >= min, "{flag} must be at least {min}");
    n.checked_mul(1 << 20)
        .with_context(|| format!("{flag} {n} is too large"))
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
        // The input is listed and checked before any table is created.
        let input = Input::scan(&opts, &cfg.tables).await?;
        let writers = pinpipe::run::start_writers(&cfg.tables, &cfg.raw, &cfg.writer).await?;
        anyhow::Ok(batch::run_input(&input, &opts, &writers).await?)
    })?;
    println!("{}", summary.line());
    print_tables(cfg)
}

fn run_report(
    cfg: &Config,
    question: Option<u8>,
    format: pinpipe::report::Format,
    out: Option<PathBuf>,
    memory_limit_mb: usize,
) -> anyhow::Result<()> {
    let questions = pinpipe::report::select(question)?;
    let started = std::time::Instant::now();
    let memory = mib("--memory-limit-mb", memory_limit_mb as u64, 64)?;
    let done = pinpipe::block_on_tokio(pinpipe::report::run(
        &cfg.tables,
        &questions,
        format,
        out.as_deref(),
        usize::try_from(memory).context("--memory-limit-mb is too large")?,
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

fn run_replay(cfg: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let opts = &pinpipe::replay::ReplayOptions {
        kinds: args.kind.map_or(Kind::ALL.to_vec(), |k| vec![k]),
        from: args.from,
        to: args.to,
        batch_rows: cfg.batch.batch_rows,
        max_record_bytes: cfg.clean.max_record_bytes,
        memory_limit: usize::try_from(mib("--memory-limit-mb", args.memory_limit_mb as u64, 64)?)?,
        progress: !args.no_progress,
    };
    let (dest, in_place) = (args.tables, args.in_place);
    let live = &cfg.tables.location;
    let dest = match dest {
        _ if in_place => live.clone(),
        Some(d) => d,
        None => pinpipe::replay::default_destination(live),
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    anyhow::ensure!(
        in_place || !same(&dest, live),
        "--tables {dest} is where the live tables are: give --in-place (with `pinpipe run` stopped) or another destination"
    );
    if in_place {
        tracing::warn!(tables = %live, "replaying into the live tables: pinpipe run must be stopped");
    }
    let mut dest_tables = cfg.tables.clone();
    dest_tables.location = dest;
    let raw = cfg.raw.tables(&cfg.tables);
    let summary = pinpipe::block_on(async {
        // The raw tables are checked before any destination table is created.
        let sources = pinpipe::replay::open_raw(&raw, &opts.kinds).await?;
        let writers = Writers::start(&dest_tables, &cfg.writer, &opts.kinds, None).await?;
        anyhow::Ok(pinpipe::replay::run(sources, &writers, opts).await?)
    })?;
    println!("{}", summary.line());
    println!(
        "tables under {}: {}",
        dest_tables.root_url()?,
        opts.kinds
            .iter()
            .flat_map(|k| pinpipe::sink::TableRole::CLEANED.map(|r| r.table_name(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn run_maintain(cfg: &Config, opts: &pinpipe::maintain::MaintainOptions) -> anyhow::Result<()> {
    let raw = cfg.raw.tables(&cfg.tables);
    let reports = pinpipe::block_on_tokio(pinpipe::maintain::run(&cfg.tables, &raw, opts))?;
    // A typo in a CronJob's location must not look like a success.
    anyhow::ensure!(
        !reports.is_empty(),
        "no pinpipe tables under {}: nothing to maintain (check tables.location or --tables)",
        cfg.tables.location
    );
    for r in reports {
        println!("{}", r.line());
    }
    Ok(())
}

fn print_tables(cfg: &Config) -> anyhow::Result<()> {
    let root = cfg.tables.root_url()?;
    println!("tables under {root}: {}", pinpipe::sink::table_names().join(", "));
    Ok(())
}

/// `pinpipe emulate`: posts to files, Kafka, Kinesis or a gateway.
fn run_emulate(cfg: &mut Config, a: EmulateArgs) -> anyhow::Result<()> {
    if let Some(s) = a.seed {
        cfg.emulate.seed = s;
    }
    if let Some(r) = a.rate {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate must be a positive number of posts per second"
        );
    }
    anyhow::ensure!(
        a.out.is_none() || matches!(a.to, Target::Files),
        "--out applies to --to files only (Kafka, Kinesis and the gateway take their addresses from the config)"
    );
    anyhow::ensure!(
        a.concurrency == DEFAULT_CONCURRENCY || matches!(a.to, Target::Gateway),
        "--concurrency applies to --to gateway only"
    );
    let started = std::time::Instant::now();
    let per_sec = |n: u64| n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let (count, progress) = (a.count, !a.no_progress);
    match a.to {
        Target::Files => {
            let out = a.out.clone().unwrap_or_else(|| cfg.batch.input.clone());
            let write = pinpipe::emulate::files::write(&cfg.emulate, &cfg.tables, &out, count, a.rate, progress);
            println!("{}", pinpipe::block_on(write)?.line());
        }
        Target::Kafka => {
            let produce = pinpipe::emulate::kafka::produce(&cfg.emulate, &cfg.kafka, count, a.rate, progress, None);
            let n = pinpipe::block_on(produce)?;
            println!(
                "emulate: {count} posts, {n} records to {} in {:.2}s ({:.0} records/s)",
                cfg.kafka.brokers,
                started.elapsed().as_secs_f64(),
                per_sec(n)
            );
        }
        Target::Kinesis => {
            let put = pinpipe::emulate::kinesis::put(&cfg.emulate, &cfg.kinesis, count, a.rate, progress);
            let n = pinpipe::block_on(put)?;
            let streams: Vec<String> = cfg.kinesis.stream_map().into_keys().collect();
            println!(
                "emulate: {count} posts, {n} records to {} in {:.2}s ({:.0} records/s)",
                streams.join(","),
                started.elapsed().as_secs_f64(),
                per_sec(n)
            );
        }
        Target::Gateway => {
            let target = gateway_target(cfg, &a)?;
            let post = pinpipe::emulate::gateway::post(&cfg.emulate, &target, count, a.rate, progress);
            let s = pinpipe::block_on(post)?;
            println!(
                "emulate: {count} posts, {} records acknowledged by {} in {:.2}s ({:.0} records/s), \
                 {} refused as malformed (400/422), {} retried requests",
                s.acked,
                target.url,
                started.elapsed().as_secs_f64(),
                per_sec(s.acked),
                s.refused,
                s.retries
            );
        }
    }
    Ok(())
}

/// Where `emulate --to gateway` posts: the URL and, per kind, the topic or stream name.
fn gateway_target(cfg: &Config, a: &EmulateArgs) -> anyhow::Result<pinpipe::emulate::gateway::GatewayTarget> {
    use pinpipe::emulate::gateway::{GatewayApi, GatewayTarget};
    anyhow::ensure!((1..=1024).contains(&a.concurrency), "--concurrency must be in 1..=1024");
    let (map, what) = match a.api {
        GatewayApi::Kafka => (cfg.kafka.topic_map(), "topic in [kafka.topics]"),
        GatewayApi::Kinesis => (cfg.kinesis.stream_map(), "stream in [kinesis.streams]"),
    };
    let name = |k: Kind| {
        map.iter()
            .find(|(_, v)| **v == k)
            .map(|(n, _)| (k, n.clone()))
            .ok_or_else(|| anyhow::anyhow!("no {what} maps to kind {k}"))
    };
    Ok(GatewayTarget {
        url: a.url.clone().unwrap_or_default(),
        api: a.api,
        token: a.token.clone(),
        concurrency: a.concurrency,
        names: [name(Kind::Pin)?, name(Kind::Geo)?, name(Kind::User)?],
    })
}
