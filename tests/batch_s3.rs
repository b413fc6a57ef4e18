//! `pinpipe batch` against a real S3 API server (moto on 127.0.0.1): concurrent writers on
//! one table, S3 input, and a missing bucket.

mod support;

use std::collections::HashSet;
use std::process::{Command, Output};

use pinpipe::clean::Kind;
use support::proc::BIN;
use support::s3::S3Server;

fn pinpipe(s3: &S3Server, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PINPIPE_CONFIG")
        .env("PINPIPE__TABLES__ENDPOINT", &s3.endpoint)
        .env("PINPIPE__TABLES__REGION", "us-east-1")
        .env("PINPIPE__TABLES__ALLOW_HTTP", "true")
        .env("PINPIPE__TABLES__PATH_STYLE", "true")
        .env("PINPIPE__TABLES__ACCESS_KEY_ID", "test")
        .env("PINPIPE__TABLES__SECRET_ACCESS_KEY", "test")
        // Many small commits so the two processes really interleave.
        .env("PINPIPE__WRITER__MAX_ROWS", "1500")
        .env("PINPIPE__BATCH__BATCH_ROWS", "500");
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_processes_append_to_the_same_tables_on_s3() {
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    // Two different inputs (different seeds), both on S3, one set of tables.
    for (seed, prefix) in [("1", "raw-a"), ("2", "raw-b")] {
        ok(pinpipe(
            &s3,
            &[
                "emulate",
                "--count",
                "4000",
                "--seed",
                seed,
                "--no-progress",
                "--out",
                &format!("s3://tables/{prefix}"),
            ],
        )
        .env("PINPIPE__EMULATE__RECORDS_PER_FILE", "1000")
        .output()
        .unwrap());
    }
    let spawn = |prefix: &str| {
        pinpipe(
            &s3,
            &[
                "batch",
                "--no-progress",
                "--input",
                &format!("s3://tables/{prefix}"),
                "--tables",
                "s3://tables/delta",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("raw-a"), spawn("raw-b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (la, lb) = (ok(a), ok(b));
    assert!(la.contains("12000 records"), "{la}");
    assert!(lb.contains("12000 records"), "{lb}");

    let t = s3.tables_config("s3://tables/delta");
    let mut total = 0;
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            let url = t.table_url(&name).unwrap().to_string();
            let rows = pinpipe::block_on(support::rows::read_table(&url, t.storage_options()));
            let mut seen = HashSet::new();
            for r in &rows {
                let key = (
                    r["_stream"].clone(),
                    r["_partition"].to_string(),
                    r["_position"].to_string(),
                );
                assert!(seen.insert(key.clone()), "{name}: duplicate {key:?}");
            }
            // Rows from both inputs are present in the shared table.
            if !name.ends_with("_dead_letter") {
                let parts: HashSet<bool> = rows
                    .iter()
                    .map(|r| r["_partition"].as_str().unwrap().starts_with("raw-a/"))
                    .collect();
                assert_eq!(parts.len(), 2, "{name}: rows of both processes");
            }
            total += rows.len();
        }
    }
    assert_eq!(total, 24_000, "every record of both inputs exactly once");

    // A rerun of one input adds nothing.
    let again = ok(pinpipe(
        &s3,
        &[
            "batch",
            "--no-progress",
            "--input",
            "s3://tables/raw-a",
            "--tables",
            "s3://tables/delta",
        ],
    )
    .output()
    .unwrap());
    assert!(again.contains("already present 12000"), "{again}");
}

#[test]
fn missing_bucket_is_a_clear_error() {
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    ok(pinpipe(
        &s3,
        &["emulate", "--count", "10", "--no-progress", "--out", "s3://tables/raw"],
    )
    .output()
    .unwrap());
    let out = pinpipe(
        &s3,
        &[
            "batch",
            "--no-progress",
            "--input",
            "s3://tables/raw",
            "--tables",
            "s3://no-such-bucket/delta",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no-such-bucket") || err.contains("NoSuchBucket"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = pinpipe(
        &s3,
        &[
            "batch",
            "--no-progress",
            "--input",
            "s3://no-such-bucket/raw",
            "--tables",
            "s3://tables/delta",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("no-such-bucket") || err.contains("NoSuchBucket"), "{err}");
}
