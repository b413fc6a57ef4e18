//! Which shards a process should take or ask for: a pure function of what it sees, so the
//! rules are unit-tested without a store or a stream.
//!
//! - Only **eligible** shards count: not finished, and every parent finished (or gone
//!   from the stream, trimmed by retention). A child never starts before its parents are
//!   read to their ends, which keeps each partition key's records in order.
//! - The live processes are the owners of unexpired leases plus this one. Each aims at an
//!   even share: it takes free or expired leases while it holds fewer than
//!   `ceil(eligible / live)`.
//! - When nothing is free and it holds fewer than `floor(eligible / live)` while the
//!   busiest owner holds at least two more, it asks that owner for one shard (`Steal`).
//!   One request per round, so shares converge without ping-pong.

use std::collections::{BTreeMap, BTreeSet};

/// What a process knows of one shard in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// `(stream, shard id)`.
    pub key: (String, String),
    /// The lease's owner, if the lease is held and not expired.
    pub owner: Option<String>,
    pub finished: bool,
    /// Every parent is finished or no longer listed.
    pub parents_done: bool,
    /// A steal request is already pending on this lease.
    pub steal_pending: bool,
}

impl ShardView {
    fn eligible(&self) -> bool {
        !self.finished && self.parents_done
    }
}

/// One step of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The lease is free or expired: take it.
    Take((String, String)),
    /// Ask the owner to hand it over.
    Steal((String, String)),
}

/// The steps `me` takes this round.
pub fn plan(me: &str, shards: &[ShardView]) -> Vec<Step> {
    let eligible: Vec<&ShardView> = shards.iter().filter(|s| s.eligible()).collect();
    if eligible.is_empty() {
        return Vec::new();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &eligible {
        if let Some(o) = &s.owner {
            *counts.entry(o.as_str()).or_default() += 1;
        }
    }
    let live: BTreeSet<&str> = counts.keys().copied().chain([me]).collect();
    let n = eligible.len();
    let ceil = n.div_ceil(live.len());
    let floor = n / live.len();
    let mut mine = counts.get(me).copied().unwrap_or(0);
    let mut steps = Vec::new();
    for s in eligible.iter().filter(|s| s.owner.is_none()) {
        if mine >= ceil {
            break;
        }
        steps.push(Step::Take(s.key.clone()));
        mine += 1;
    }
    let free_left = eligible.iter().filter(|s| s.owner.is_none()).count() > steps.len();
    if !free_left && mine < floor {
        // The busiest other owner; ties go to the smallest name, so every process agrees.
        let busiest = counts
            .iter()
            .filter(|(o, _)| **o != me)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        if let Some((owner, &count)) = busiest {
            if count >= mine + 2 {
                if let Some(s) = eligible
                    .iter()
                    .rev()
                    .find(|s| s.owner.as_deref() == Some(owner) && !s.steal_pending)
                {
                    steps.push(Step::Steal(s.key.clone()));
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shard: &str, owner: Option<&str>) -> ShardView {
        ShardView {
            key: ("s".into(), shard.into()),
            owner: owner.map(Into::into),
            finished: false,
            parents_done: true,
            steal_pending: false,
        }
    }

    fn takes(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Take(k) => Some(k.1.as_str()),
                Step::Steal(_) => None,
            })
            .collect()
    }

    #[test]
    fn alone_takes_everything_eligible() {
        let mut shards: Vec<ShardView> = (0..4).map(|i| view(&format!("s{i}"), None)).collect();
        shards[3].finished = true;
        shards.push(ShardView {
            parents_done: false,
            ..view("child", None)
        });
        assert_eq!(takes(&plan("a", &shards)), ["s0", "s1", "s2"]);
    }

    #[test]
    fn newcomer_steals_one_at_a_time_until_even() {
        let mut shards: Vec<ShardView> = (0..4).map(|i| view(&format!("s{i}"), Some("a"))).collect();
        assert_eq!(plan("b", &shards), [Step::Steal(("s".into(), "s3".into()))]);
        // The pending request is not repeated; the owner hands over, b takes it.
        shards[3].steal_pending = true;
        assert_eq!(plan("b", &shards), [Step::Steal(("s".into(), "s2".into()))]);
        shards[3] = view("s3", None);
        assert_eq!(takes(&plan("b", &shards)), ["s3"]);
        shards[3] = view("s3", Some("b"));
        shards[2] = view("s2", Some("b"));
        assert!(plan("b", &shards).is_empty(), "2/2 is even");
        assert!(plan("a", &shards).is_empty());
    }

    #[test]
    fn uneven_counts_do_not_ping_pong() {
        // 5 shards, 2 processes: 3/2 is as even as it gets.
        let shards: Vec<ShardView> = (0..5)
            .map(|i| view(&format!("s{i}"), Some(if i < 3 { "a" } else { "b" })))
            .collect();
        assert!(plan("a", &shards).is_empty());
        assert!(plan("b", &shards).is_empty());
    }

    #[test]
    fn free_shards_are_shared_not_grabbed() {
        // b holds 2 of 4; a (new, sees b live) takes only up to its share.
        let shards = vec![
            view("s0", Some("b")),
            view("s1", Some("b")),
            view("s2", None),
            view("s3", None),
        ];
        assert_eq!(takes(&plan("a", &shards)), ["s2", "s3"]);
        let shards = vec![view("s0", Some("b")), view("s1", None), view("s2", None)];
        assert_eq!(takes(&plan("a", &shards)), ["s1", "s2"]);
    }
}
