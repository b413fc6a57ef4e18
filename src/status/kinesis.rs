//! Kinesis's side of `pinpipe status`: each configured stream's shards (ListShards), a
//! probe of what waits after the position stored in the tables, and each shard's lease.
//!
//! Kinesis has no call that returns a shard's last sequence number, so the lag is not a
//! record count. The probe asks for an iterator `AFTER_SEQUENCE_NUMBER` of the lower stored
//! position (`TRIM_HORIZON` when a table has none) and one `GetRecords` with `Limit = 1`:
//! a record in the answer, or `MillisBehindLatest > 0`, means records are waiting, and
//! `MillisBehindLatest` says how far behind the tip that position is. That is two calls
//! per shard, well inside the API's 5 calls/s per shard.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;

use super::tables::age_s;
use super::{positions_of, resume_position, End, EndpointStatus, LeaseStatus, SourceStatus, TableStatus};
use crate::clean::Kind;
use crate::sink::{Position, SourceKey, SourceKind, TablesConfig};
use crate::sources::kinesis::lease::LeaseStore;
use crate::sources::kinesis::KinesisConfig;

/// The streams' shards with their probe and lease, and every Kinesis shard the tables
/// store a position for.
pub async fn read(
    cfg: &KinesisConfig,
    tables_cfg: &TablesConfig,
    tables: &[TableStatus],
    timeout: Duration,
) -> (EndpointStatus, Vec<SourceStatus>) {
    let client = client(cfg, timeout).await;
    let streams = cfg.stream_map();
    let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut errors = Vec::new();
    let mut unlisted = BTreeSet::new();
    for stream in streams.keys() {
        match list_shards(&client, stream).await {
            Ok(shards) => keys.extend(shards.into_iter().map(|s| (stream.clone(), s))),
            Err(e) => {
                errors.push(e);
                unlisted.insert(stream.clone());
            }
        }
    }
    for t in tables {
        for k in t.positions.keys().filter(|k| k.source == SourceKind::Kinesis) {
            keys.insert((k.stream.clone(), k.partition.clone()));
        }
    }
    let leases = LeaseStore::open(tables_cfg, &cfg.application).map_err(|e| e.to_string());
    let endpoint = EndpointStatus {
        source: "kinesis",
        target: if cfg.endpoint.is_empty() {
            format!(
                "AWS ({})",
                if cfg.region.is_empty() {
                    "default region"
                } else {
                    &cfg.region
                }
            )
        } else {
            cfg.endpoint.clone()
        },
        state: if errors.is_empty() { "ok" } else { "unknown" },
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    };
    let mut sources = Vec::with_capacity(keys.len());
    for (stream, shard) in keys {
        let kind = streams.get(&stream).copied();
        let mut s = if unlisted.contains(&stream) {
            // The stream did not answer ListShards: no probe (each would wait the timeout).
            unknown(tables, &stream, &shard, kind)
        } else {
            shard_status(cfg, &client, tables, &stream, &shard, kind).await
        };
        s.lease = match &leases {
            Ok(store) => lease(store, &stream, &shard, &mut s.error).await,
            Err(e) => {
                s.error.get_or_insert_with(|| format!("lease store: {e}"));
                None
            }
        };
        sources.push(s);
    }
    (endpoint, sources)
}

/// pinpipe's client for `cfg` with every call bounded by `timeout` (the source's client
/// has no operation timeout: its loops back off on their own).
async fn client(cfg: &KinesisConfig, timeout: Duration) -> Client {
    let base = crate::sources::kinesis::client(cfg).await;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    Client::from_conf(base.config().to_builder().timeout_config(timeouts).build())
}

fn call_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    e: aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{what}: {c}: {m}"),
        _ => format!("{what}: {}", DisplayErrorContext(&e)),
    }
}

async fn list_shards(client: &Client, stream: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let page = req
            .send()
            .await
            .map_err(|e| call_error(&format!("ListShards {stream}"), e))?;
        out.extend(page.shards().iter().map(|s| s.shard_id().to_string()));
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

/// One shard's row: the positions, the probe's verdict.
async fn shard_status(
    cfg: &KinesisConfig,
    client: &Client,
    tables: &[TableStatus],
    stream: &str,
    shard: &str,
    kind: Option<Kind>,
) -> SourceStatus {
    let key = SourceKey::new(SourceKind::Kinesis, stream, shard);
    let stored = positions_of(tables, kind, &key);
    let resume = resume_position(&stored);
    let (end, error) = match probe(cfg, client, stream, shard, resume.as_ref()).await {
        Ok(end) => (
            end,
            kind.is_none()
                .then(|| "stream not in [kinesis] (an earlier config's)".into()),
        ),
        Err(e) => (End::Unknown, Some(e)),
    };
    let waiting = match &end {
        End::Probe { waiting, .. } => Some(*waiting),
        _ => None,
    };
    SourceStatus {
        source: "kinesis",
        stream: stream.to_string(),
        partition: shard.to_string(),
        kind,
        positions: stored.into_iter().map(|(t, p)| (t, p.map(|p| p.to_string()))).collect(),
        end,
        lag_records: None,
        waiting,
        lease: None,
        error,
    }
}

/// A shard of a stream that did not answer: its stored positions only.
fn unknown(tables: &[TableStatus], stream: &str, shard: &str, kind: Option<Kind>) -> SourceStatus {
    let key = SourceKey::new(SourceKind::Kinesis, stream, shard);
    SourceStatus {
        source: "kinesis",
        stream: stream.to_string(),
        partition: shard.to_string(),
        kind,
        positions: positions_of(tables, kind, &key)
            .into_iter()
            .map(|(t, p)| (t, p.map(|p| p.to_string())))
            .collect(),
        end: End::Unknown,
        lag_records: None,
        waiting: None,
        lease: None,
        error: Some("stream unreachable".into()),
    }
}

/// What waits after `from` (see the module header).
async fn probe(
    cfg: &KinesisConfig,
    client: &Client,
    stream: &str,
    shard: &str,
    from: Option<&Position>,
) -> Result<End, String> {
    let req = client.get_shard_iterator().stream_name(stream).shard_id(shard);
    let req = match from {
        Some(p) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(p.to_string()),
        None if cfg.initial_position == "latest" => {
            // A new shard read from LATEST has nothing waiting by definition.
            return Ok(End::Probe {
                waiting: false,
                millis_behind_latest: None,
            });
        }
        None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let it = req
        .send()
        .await
        .map_err(|e| call_error(&format!("GetShardIterator {stream}/{shard}"), e))?;
    let Some(iterator) = it.shard_iterator() else {
        // A closed shard read to its end.
        return Ok(End::Probe {
            waiting: false,
            millis_behind_latest: Some(0),
        });
    };
    let got = client
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .send()
        .await
        .map_err(|e| call_error(&format!("GetRecords {stream}/{shard}"), e))?;
    let behind = got.millis_behind_latest();
    Ok(End::Probe {
        waiting: !got.records().is_empty() || behind.is_some_and(|ms| ms > 0),
        millis_behind_latest: behind,
    })
}

/// The shard's lease, or `None` when it was never written; a read error goes to `error`.
async fn lease(store: &LeaseStore, stream: &str, shard: &str, error: &mut Option<String>) -> Option<LeaseStatus> {
    match store.inspect(stream, shard).await {
        Ok(Some((l, modified))) => Some(LeaseStatus {
            owner: l.owner,
            finished: l.finished,
            age_s: modified.map(age_s),
        }),
        Ok(None) => None,
        Err(e) => {
            error.get_or_insert_with(|| e.to_string());
            None
        }
    }
}
