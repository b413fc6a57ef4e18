//! The Kinesis harness against each server it can start ([`Flavor`]): through the SDK
//! client it creates, lists, splits and merges shards and counts every record put, and the
//! sequence numbers have the shape the flavour's notes promise. Checked here so that a
//! failing Kinesis test points at pinpipe, not at the harness or a server's quirk.
mod support;

use std::time::Duration;

use support::kinesis::{Flavor, KinesisServer};

const STREAM: &str = "streaming-harness-pin";

#[test]
fn kinesis_local_serves_the_harness() {
    check_flavor(Flavor::KinesisLocal);
}

#[test]
fn kinesalite_serves_the_harness() {
    check_flavor(Flavor::Kinesalite);
}

#[test]
fn moto_serves_the_harness() {
    check_flavor(Flavor::Moto);
}

fn check_flavor(flavor: Flavor) {
    let server = KinesisServer::start_flavor(flavor);
    server.create_stream(STREAM, 2);
    let sequence_numbers = put(&server, 0..20);
    // kinesis-local and kinesalite give AWS's 56-digit decimals; moto small integers.
    let beyond_i64 = sequence_numbers.iter().all(|s| s.parse::<i64>().is_err());
    assert_eq!(beyond_i64, flavor != Flavor::Moto, "{flavor:?}: {sequence_numbers:?}");
    split_then_merge_back(&server);
    put(&server, 20..30);
    // Node servers close a keep-alive connection idle for 5 s (observed at 6 s), unseen by
    // the harness's runtime between calls: after such a pause the next call must succeed.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(server.count_records(STREAM), 30, "{flavor:?}: records in every shard");
}

/// Puts one small JSON record per index; returns the sequence numbers.
fn put(server: &KinesisServer, indexes: std::ops::Range<u32>) -> Vec<String> {
    let records: Vec<Vec<u8>> = indexes.map(|i| format!("{{\"index\":{i}}}").into_bytes()).collect();
    let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    server.put_records(STREAM, &records)
}

/// Splits the first shard, then merges its two children: each child names its parents.
fn split_then_merge_back(server: &KinesisServer) {
    let first = server.shards(STREAM)[0].shard_id().to_string();
    server.split_shard(STREAM, &first);
    let mut children: Vec<_> = server
        .shards(STREAM)
        .into_iter()
        .filter(|s| s.parent_shard_id() == Some(first.as_str()))
        .collect();
    assert_eq!(children.len(), 2, "the split's children of {first}: {children:?}");
    // The merge's child names ShardToMerge as ParentShardId, the other as AdjacentParentShardId.
    children.sort_by_key(|s| s.hash_key_range().unwrap().starting_hash_key().parse::<u128>().unwrap());
    let (low, high) = (children[0].shard_id(), children[1].shard_id());
    server.merge_shards(STREAM, low, high);
    let merged: Vec<_> = server
        .shards(STREAM)
        .into_iter()
        .filter(|s| s.parent_shard_id() == Some(low) && s.adjacent_parent_shard_id() == Some(high))
        .collect();
    assert_eq!(merged.len(), 1, "the merge's child of {low} and {high}: {merged:?}");
}
