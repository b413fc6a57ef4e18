//! Every invalid configuration gives a clear error naming the key, never a panic and never a
//! silent default: a table of cases, each run through `pinpipe check-config` (the binary, as
//! an operator or the k8s init step runs it), from a file and from `PINPIPE__*` variables.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");

fn check_config(toml: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    // The working directory has no config/pinpipe.toml, so only what the case gives applies.
    cmd.current_dir(dir.path()).env("PINPIPE_LOG", "warn");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PINPIPE_")) {
        cmd.env_remove(k);
    }
    if let Some(text) = toml {
        let path = dir.path().join("case.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    cmd.envs(env.iter().copied()).arg("check-config").output().unwrap()
}

/// Why `out` is not a clear refusal naming every needle, or None when it is.
fn refusal_problem(case: &str, out: &Output, needles: &[&str]) -> Option<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Some(format!(
            "{case:?}: accepted, printed {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if err.contains("panicked") || out.status.code() != Some(2) && out.status.code() != Some(1) {
        return Some(format!("{case:?}: crashed ({}): {err}", out.status));
    }
    let missing: Vec<&&str> = needles.iter().filter(|n| !err.contains(**n)).collect();
    (!missing.is_empty()).then(|| format!("{case:?}: error does not mention {missing:?}: {}", err.trim()))
}

/// (file contents, what the error must say: the key first, then the hint where there is one).
const FILE_CASES: &[(&str, &[&str])] = &[
    // Syntax and types: the config crate names the key and the type it wanted.
    ("[writer\nmax_rows = 1\n", &["case.toml"]),
    ("[writer]\nmax_rows = \"many\"\n", &["max_rows"]),
    ("[writer]\nmax_rows = -5\n", &["max_rows"]),
    ("[kafka]\nenabled = \"perhaps\"\n", &["enabled"]),
    ("[kafka]\nworkers = 1.5\n", &["kafka.workers", "whole number"]),
    // Unknown keys and sections are refused, so a typo never silently keeps a default.
    ("[writer]\nmax_row = 10\n", &["max_row"]),
    ("[writers]\nmax_rows = 10\n", &["writers"]),
    // Ranges and combinations, each named by its key.
    ("[tables]\nlocation = \"ftp://x/y\"\n", &["tables.location"]),
    (
        "[tables]\ncheckpoint_interval = 0\n",
        &["tables.checkpoint_interval", "at least 1"],
    ),
    (
        "[tables]\nrequest_timeout_ms = 5\n",
        &["tables.request_timeout_ms", "at least 100"],
    ),
    ("[tables]\nmax_retries = 1000\n", &["tables.max_retries", "at most 100"]),
    ("[tables]\nendpoint = \"127.0.0.1:9000\"\n", &["tables.endpoint"]),
    (
        "[tables]\nendpoint = \"http://127.0.0.1:9000\"\n",
        &["tables.endpoint", "allow_http"],
    ),
    ("[writer]\nmax_rows = 0\n", &["writer.max_rows", "at least 1"]),
    ("[writer]\nmax_bytes = 10\n", &["writer.max_bytes", "1024"]),
    ("[writer]\nmax_age_ms = 0\n", &["writer.max_age_ms"]),
    ("[writer]\nzstd_level = 23\n", &["writer.zstd_level", "1..=22"]),
    ("[writer]\nrow_group_rows = 0\n", &["writer.row_group_rows"]),
    ("[writer]\ncommit_attempts = 0\n", &["writer.commit_attempts"]),
    ("[clean]\nmax_record_bytes = 0\n", &["clean.max_record_bytes"]),
    ("[batch]\nconcurrency = 0\n", &["batch.concurrency", "1..=256"]),
    ("[batch]\nconcurrency = 1000\n", &["batch.concurrency", "1..=256"]),
    ("[batch]\nbatch_rows = 0\n", &["batch.batch_rows"]),
    ("[emulate]\ninvalid_share = 1.5\n", &["emulate.invalid_share", "0..=1"]),
    ("[emulate]\nindex_pool = 0\n", &["emulate.index_pool"]),
    ("[emulate]\npartitions = 0\n", &["emulate.partitions"]),
    ("[emulate]\nrecords_per_file = 0\n", &["emulate.records_per_file"]),
    ("[emulate]\ntopic_prefix = \"a/b\"\n", &["emulate.topic_prefix"]),
    (
        "[kafka]\nenabled = false\n[kinesis]\nenabled = false\n",
        &["kafka.enabled"],
    ),
    (
        "[kafka]\nauto_offset_reset = \"smallest\"\n",
        &["kafka.auto_offset_reset", "earliest"],
    ),
    ("[kafka]\nbrokers = \" \"\n", &["kafka.brokers"]),
    ("[kafka]\ngroup_id = \"\"\n", &["kafka.group_id"]),
    ("[kafka]\nbatch_rows = 0\n", &["kafka.batch_rows"]),
    ("[kafka]\nbatch_age_ms = 0\n", &["kafka.batch_rows"]),
    ("[kafka]\nworkers = 0\n", &["kafka.workers", "1..=256"]),
    ("[kafka]\nheld_records = 0\n", &["kafka.held_records"]),
    ("[kafka]\nfetch_queue_kbytes = 1\n", &["kafka.fetch_queue_kbytes"]),
    ("[kafka]\nshutdown_grace_ms = 10\n", &["kafka.shutdown_grace_ms"]),
    (
        "[kafka]\nmsk_iam_region = \"eu-west-1\"\n[kafka.properties]\n\"sasl.mechanism\" = \"PLAIN\"\n",
        &["kafka.properties", "OAUTHBEARER"],
    ),
    ("[metrics]\nlisten = \"localhost\"\n", &["metrics.listen"]),
    (
        "[kinesis]\ninitial_position = \"oldest\"\n",
        &["kinesis.initial_position", "trim_horizon"],
    ),
    (
        "[kinesis]\nmax_records_per_call = 20000\n",
        &["kinesis.max_records_per_call", "10000"],
    ),
    ("[kinesis]\nlease_ms = 10\n", &["kinesis.lease_ms"]),
    ("[kinesis]\nworkers = 0\n", &["kinesis.workers"]),
    ("[kinesis]\nbatch_age_ms = 0\n", &["kinesis.batch"]),
    (
        "[kinesis]\nbackoff_base_ms = 500\nbackoff_max_ms = 100\n",
        &["kinesis.backoff_base_ms", "backoff_max_ms"],
    ),
    (
        "[kinesis]\nmax_read_bytes_per_sec = 0\n",
        &["kinesis.max_read_bytes_per_sec"],
    ),
    ("[kinesis]\nshard_sync_ms = 0\n", &["kinesis.shard_sync_ms"]),
    (
        "[kinesis]\nconsumer_name = \"my consumer\"\n",
        &["kinesis.consumer_name", "not a valid consumer name"],
    ),
    ("[kinesis]\nshutdown_grace_ms = 1\n", &["kinesis.shutdown_grace_ms"]),
    (
        "[kinesis]\nendpoint = \"127.0.0.1:4567\"\n",
        &["kinesis.endpoint", "http"],
    ),
    ("[gateway]\nlisten = \"nowhere\"\n", &["gateway.listen"]),
    ("[gateway]\nauth = \"maybe\"\n", &["gateway.auth", "token, none"]),
    ("[gateway]\ntokens = [\" padded \"]\n", &["gateway.tokens"]),
    ("[gateway]\nmax_body_bytes = 10\n", &["gateway.max_body_bytes"]),
    ("[gateway]\nmax_records = 0\n", &["gateway.max_records", "1..=10000"]),
    ("[gateway]\nmax_record_bytes = 0\n", &["gateway.max_record_bytes"]),
    ("[gateway]\nproduce_timeout_ms = 1\n", &["gateway.produce_timeout_ms"]),
    (
        "[gateway]\nmax_records = 500\nmax_inflight_records = 10\n",
        &["gateway.max_inflight_records", "gateway.max_records"],
    ),
    ("[gateway]\nretry_after_s = 0\n", &["gateway.retry_after_s"]),
    ("[gateway]\nworkers = 0\n", &["gateway.workers"]),
    ("[raw]\nlocation = \"gs://bucket/raw\"\n", &["raw.location"]),
    ("[raw]\nretention_days = -1\n", &["retention_days"]),
    ("[raw]\nenabled = \"maybe\"\n", &["enabled"]),
    ("[raw]\nretention = 7\n", &["retention"]),
];

#[test]
fn every_invalid_config_is_refused_naming_its_key() {
    // Every case runs; the failures are reported together.
    let mut problems = Vec::new();
    for (text, needles) in FILE_CASES {
        let out = check_config(Some(text), &[]);
        problems.extend(refusal_problem(text, &out, needles));
    }
    // The same rules through environment overrides, as k8s manifests set them.
    let env_cases: &[(&str, &str, &[&str])] = &[
        ("PINPIPE__WRITER__ZSTD_LEVEL", "0", &["writer.zstd_level"]),
        ("PINPIPE__WRITER__MAX_ROWS", "lots", &["max_rows"]),
        ("PINPIPE__KAFKA__WORKERS", "999", &["kafka.workers"]),
        ("PINPIPE__KAFKA__WORKERS", "2.5", &["kafka.workers", "whole number"]),
        ("PINPIPE__TABLES__LOCATION", "gs://bucket/t", &["tables.location"]),
    ];
    for (k, v, needles) in env_cases {
        let out = check_config(None, &[(k, v)]);
        problems.extend(refusal_problem(&format!("{k}={v}"), &out, needles));
    }
    // A missing file is named, not replaced by defaults.
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/pinpipe.toml", "check-config"])
        .output()
        .unwrap();
    problems.extend(refusal_problem("missing file", &out, &["/nonexistent/pinpipe.toml"]));
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        FILE_CASES.len() + env_cases.len() + 1,
        problems.join("\n")
    );
}

/// The control: an empty file and the shipped example pass, so the cases above fail for
/// their one bad key and not for something they share.
#[test]
fn valid_configs_pass() {
    let out = check_config(Some(""), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pinpipe.toml")).unwrap();
    let out = check_config(Some(&shipped), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Sizes on the command line that would overflow when turned into bytes or seconds are
/// refused naming the flag (they used to wrap silently).
#[test]
fn cli_sizes_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let big = u64::MAX.to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["maintain", "--retention-hours", &big], "--retention-hours"),
        (&["maintain", "--target-size-mb", &big], "--target-size-mb"),
        (&["maintain", "--target-size-mb", "0"], "--target-size-mb"),
        (
            &["report", "--memory-limit-mb", "18446744073709551615"],
            "--memory-limit-mb",
        ),
    ];
    for (args, flag) in cases {
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("PINPIPE_CONFIG")
            .args(args)
            .args(["--tables", tables.to_str().unwrap()])
            .output()
            .unwrap();
        if let Some(problem) = refusal_problem(&args.join(" "), &out, &[flag]) {
            panic!("{problem}");
        }
    }
}

/// Environment overrides take their type from the config struct: a string that looks like
/// a number stays a string, lists and maps can be set, map keys keep their case and spell
/// dots as `__` (issue #28).
#[test]
fn environment_overrides_keep_their_types() {
    let out = check_config(
        None,
        &[
            ("PINPIPE__KAFKA__GROUP_ID", "0012"),
            ("PINPIPE__GATEWAY__TOKENS", "tok-a,tok-b"),
            ("PINPIPE__GATEWAY__STREAMS", r#"["s-1","s-2"]"#),
            ("PINPIPE__KAFKA__PROPERTIES__ssl__ca__location", "/etc/ca.pem"),
            ("PINPIPE__KAFKA__TOPICS__Events__Pins", "pin"),
            ("PINPIPE__KAFKA__TOPICS__events__geo", "geo"),
            ("PINPIPE__KAFKA__TOPICS__events__user", "user"),
        ],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(cfg["kafka"]["group_id"].as_str(), Some("0012"), "{printed}");
    let tokens: Vec<&str> = cfg["gateway"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Two tokens, each a secret: check-config shows that they are set, not what they are.
    assert_eq!(tokens, ["***", "***"], "{printed}");
    assert_eq!(cfg["gateway"]["streams"].as_array().unwrap().len(), 2);
    assert_eq!(
        cfg["kafka"]["properties"]["ssl.ca.location"].as_str(),
        Some("/etc/ca.pem"),
        "{printed}"
    );
    assert_eq!(cfg["kafka"]["topics"]["Events.Pins"].as_str(), Some("pin"), "{printed}");
}

/// An error names its cause once, on one line (issue #28: the config crate's message was
/// printed two and three times).
#[test]
fn an_error_says_its_cause_once() {
    for (toml, env, needle) in [
        (Some("[writer]\nmax_rowz = 5\n"), vec![], "max_rowz"),
        (Some("[writer\n"), vec![], "case.toml"),
        (
            None,
            vec![("PINPIPE__WRITER__MAX_ROWS", "many")],
            "PINPIPE__WRITER__MAX_ROWS",
        ),
    ] {
        let out = check_config(toml, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.matches(needle).count(), 1, "{needle} said more than once: {err}");
        assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
    }
}
