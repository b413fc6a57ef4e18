//! The Kinesis lease store's contract, run on both of its stores: a local folder (the
//! counter compared under `flock`) and S3 (moto, conditional writes on the ETag). The
//! coordinator relies on exactly these properties whichever store holds the tables, so one
//! function states them and each store gets a test that runs it.
mod support;

use std::sync::Arc;

use pinpipe::sink::TablesConfig;
use pinpipe::sources::kinesis::lease::{Lease, LeaseStore, Tag, Written};
use support::s3::S3Server;
use tokio::sync::Barrier;

const STREAM: &str = "streaming-contract-pin";
/// Writers racing for one version in each round of the concurrency check.
const RACERS: usize = 8;
/// Rounds of that race: the first creates the lease (no version yet), the others update it.
const ROUNDS: u64 = 5;

#[test]
fn lease_contract_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tables = TablesConfig {
        location: dir.path().to_str().unwrap().into(),
        ..Default::default()
    };
    check_lease_contract(&tables);
}

#[test]
fn lease_contract_on_s3_with_conditional_writes() {
    let s3 = S3Server::start();
    s3.create_bucket("leases");
    check_lease_contract(&s3.tables_config("s3://leases/tables"));
}

/// Everything a lease store must do, against the lease space `app` of `tables`.
fn check_lease_contract(tables: &TablesConfig) {
    pinpipe::block_on_tokio(async {
        let store = LeaseStore::open(tables, "app").unwrap();
        compare_and_set(&store, "shardId-000000000000").await;
        finished_and_steal_for_round_trip(&store, "shardId-000000000000").await;
        one_racer_wins_each_round(tables, "shardId-000000000001").await;
    });
}

fn owned(owner: &str, counter: u64) -> Lease {
    Lease {
        owner: Some(owner.into()),
        counter,
        ..Default::default()
    }
}

/// The stored lease and its version; panics if there is none.
async fn read(store: &LeaseStore, shard: &str) -> (Lease, Tag) {
    let got = store.read(STREAM, shard).await.unwrap();
    got.unwrap_or_else(|| panic!("no lease for {shard} at {}", store.location()))
}

/// Writes `lease` over version `expect`; panics unless the write wins.
async fn must_write(store: &LeaseStore, shard: &str, lease: &Lease, expect: Option<&Tag>) -> Tag {
    match store.write(STREAM, shard, lease, expect).await.unwrap() {
        Written::Ok(tag) => tag,
        Written::Conflict => panic!("{lease:?} over {expect:?} lost at {}", store.location()),
    }
}

/// The first write names no version; a write naming the wrong version (none, or a stale
/// one) is a conflict and changes nothing; the current version wins; a read returns
/// exactly what was written with the version the write returned.
async fn compare_and_set(store: &LeaseStore, shard: &str) {
    assert_eq!(store.read(STREAM, shard).await.unwrap(), None, "never written");
    let first = owned("a", 1);
    let t1 = must_write(store, shard, &first, None).await;
    let conflict = |expect: Option<Tag>, lease: Lease| async move {
        let written = store.write(STREAM, shard, &lease, expect.as_ref()).await.unwrap();
        assert_eq!(written, Written::Conflict, "{lease:?} over {expect:?}");
    };
    conflict(None, owned("b", 1)).await;
    assert_eq!(
        read(store, shard).await,
        (first, t1.clone()),
        "a lost create changes nothing"
    );
    let renewed = owned("a", 2);
    let t2 = must_write(store, shard, &renewed, Some(&t1)).await;
    assert_ne!(t1, t2, "every write makes a new version");
    conflict(Some(t1), owned("b", 3)).await;
    assert_eq!(read(store, shard).await, (renewed, t2), "a stale write changes nothing");
}

/// `steal_for` (a hand-over request) and `finished` (a closed shard read to its end) are
/// stored and read back as written.
async fn finished_and_steal_for_round_trip(store: &LeaseStore, shard: &str) {
    let (current, tag) = read(store, shard).await;
    let asked = Lease {
        steal_for: Some("b".into()),
        counter: current.counter + 1,
        ..current
    };
    let tag = must_write(store, shard, &asked, Some(&tag)).await;
    assert_eq!(read(store, shard).await, (asked.clone(), tag.clone()));
    let done = Lease {
        owner: None,
        counter: asked.counter + 1,
        finished: true,
        steal_for: None,
    };
    let tag = must_write(store, shard, &done, Some(&tag)).await;
    assert_eq!(read(store, shard).await, (done, tag));
}

/// [`RACERS`] writers, each with a store of its own as separate processes would have,
/// write the same version at once: exactly one wins, and the stored lease is the winner's.
async fn one_racer_wins_each_round(tables: &TablesConfig, shard: &str) {
    let stores: Vec<Arc<LeaseStore>> = (0..RACERS)
        .map(|_| Arc::new(LeaseStore::open(tables, "app").unwrap()))
        .collect();
    for round in 0..ROUNDS {
        let current = stores[0].read(STREAM, shard).await.unwrap();
        let expect = current.as_ref().map(|(_, tag)| tag.clone());
        let start = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (store, expect, start) = (store.clone(), expect.clone(), start.clone());
                let shard = shard.to_string();
                let lease = owned(&format!("round{round}-racer{i}"), round + 1);
                tokio::spawn(async move {
                    start.wait().await;
                    let written = store.write(STREAM, &shard, &lease, expect.as_ref()).await.unwrap();
                    (lease, written)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            if let (lease, Written::Ok(tag)) = racer.await.unwrap() {
                winners.push((lease, tag));
            }
        }
        assert_eq!(winners.len(), 1, "round {round} over {expect:?}: winners {winners:?}");
        assert_eq!(read(&stores[0], shard).await, winners.remove(0), "round {round}");
    }
}
