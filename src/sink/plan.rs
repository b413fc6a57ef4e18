//! The rules of a table writer, as plain functions of positions (no I/O, no clock):
//!
//! - [`admit`]: whether an append joins the buffer. Appends of one source key must be
//!   contiguous (each `expect` is the previous `end`); after a key was fenced, only an
//!   append that resumes from the position stored in the table is taken.
//! - [`plan`]: at flush time, per buffered key, against the positions stored at the
//!   table version the flush read:
//!   - stored == `expect` of the buffered range: commit the rows with `end` (a
//!     compare-and-set; Delta's conflict checker rejects a concurrent commit of the same
//!     key's `txn`);
//!   - stored == `end`: an earlier attempt already landed (a commit whose answer was
//!     lost); drop the rows, they are in the table;
//!   - stored == the end of one of the range's earlier appends (a step): an attempt that
//!     landed although its answer was lost, after which the table stalled and kept taking
//!     appends. The rows up to that step are in the table: drop them and commit the rest
//!     from the step (the same compare-and-set). Had another writer stored that step, it
//!     holds the same records up to it, so the rest still lands once or is fenced;
//!   - anything else: another writer moved the key (a rebalance, a second process). Drop
//!     the rows and fence the key until its source resumes from the table.
//!
//! The writer ([`super::table_sink`]) does the I/O around these decisions.

use super::{Position, SourceKey};

/// A key's buffered range: the position the table must hold before the rows, and the one
/// it holds with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub expect: Option<Position>,
    pub end: Position,
    /// The ends of the appends before the last one, in order: where an earlier flush
    /// attempt may have committed the range up to.
    pub steps: Vec<Position>,
}

impl Range {
    /// A range of one append.
    pub fn new(expect: Option<Position>, end: Position) -> Self {
        Self {
            expect,
            end,
            steps: Vec::new(),
        }
    }

    /// The next append ends at `end`: the current end becomes a step.
    pub fn extend(&mut self, end: Position) {
        let step = std::mem::replace(&mut self.end, end);
        // A watermark that does not move the position is not a step of its own.
        if step != self.end {
            self.steps.push(step);
        }
    }

    /// The range from step `i` on: the rows before it are in the table.
    pub fn trim(&mut self, i: usize) {
        let step = self.steps.drain(..=i).next_back().expect("a step");
        self.expect = Some(step);
    }
}

/// Whether an append may join the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// It continues the key's buffered range.
    Extend,
    /// It starts the key's range (nothing buffered for it).
    Start,
    /// It does not start where the buffered range ends: the source lost its place.
    OutOfOrder { buffered: Position },
    /// The key was fenced at `stored`, and the append does not resume from there.
    Fenced { stored: Option<Position> },
}

/// Decides an append of a range starting at `expect` for a key whose buffered range ends
/// at `buffered_end` (if any), and which was fenced at `fenced_at` (if it was).
pub fn admit(
    buffered_end: Option<&Position>,
    fenced_at: Option<&Option<Position>>,
    expect: Option<&Position>,
) -> Admit {
    match (buffered_end, fenced_at) {
        (Some(end), _) if Some(end) == expect => Admit::Extend,
        (Some(end), _) => Admit::OutOfOrder { buffered: end.clone() },
        (None, Some(stored)) if stored.as_ref() != expect => Admit::Fenced { stored: stored.clone() },
        (None, _) => Admit::Start,
    }
}

/// What a flush does with one buffered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the rows and commit `end`.
    Commit,
    /// The table already holds `end`: the rows are there.
    AlreadyCommitted,
    /// The table holds the range's step `i`: drop the rows up to it, then commit the rest
    /// with `end`.
    Landed(usize),
    /// Another writer moved the key to something else: drop the rows.
    Fenced,
}

/// The rule for one key, given what the table stores for it.
pub fn decide(stored: Option<&Position>, range: &Range) -> Decision {
    if stored == range.expect.as_ref() {
        Decision::Commit
    } else if stored == Some(&range.end) {
        Decision::AlreadyCommitted
    } else if let Some(i) = stored.and_then(|at| range.steps.iter().position(|s| s == at)) {
        Decision::Landed(i)
    } else {
        Decision::Fenced
    }
}

/// A flush's decisions, key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushPlan {
    /// Keys whose rows this flush writes and commits.
    pub commit: Vec<SourceKey>,
    /// Keys of `commit` whose rows up to their step `i` are in the table already: trimmed
    /// ([`Range::trim`]) before the rest is written.
    pub landed: Vec<(SourceKey, usize)>,
    /// Keys the table already holds up to their `end`.
    pub committed: Vec<SourceKey>,
    /// Keys another writer moved, with the position it stored.
    pub fenced: Vec<(SourceKey, Option<Position>)>,
}

/// Decides every buffered key against `stored` (the table's positions at the version the
/// flush read).
pub fn plan<'a>(
    buffered: impl IntoIterator<Item = (&'a SourceKey, &'a Range)>,
    stored: impl Fn(&SourceKey) -> Option<Position>,
) -> FlushPlan {
    let mut out = FlushPlan::default();
    for (key, range) in buffered {
        let at = stored(key);
        match decide(at.as_ref(), range) {
            Decision::Commit => out.commit.push(key.clone()),
            Decision::Landed(i) => {
                out.landed.push((key.clone(), i));
                out.commit.push(key.clone());
            }
            Decision::AlreadyCommitted => out.committed.push(key.clone()),
            Decision::Fenced => out.fenced.push((key.clone(), at)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourceKind;

    fn off(n: i64) -> Position {
        Position::Offset(n)
    }

    fn key(p: &str) -> SourceKey {
        SourceKey::new(SourceKind::Kafka, "t", p)
    }

    #[test]
    fn appends_must_be_contiguous_and_resume_where_fenced() {
        // Nothing buffered, never fenced: any start is taken (the source resumed from the
        // table; the flush checks the start against the table).
        assert_eq!(admit(None, None, None), Admit::Start);
        assert_eq!(admit(None, None, Some(&off(5))), Admit::Start);
        // Buffered up to 10: the next append must start at 10.
        assert_eq!(admit(Some(&off(10)), None, Some(&off(10))), Admit::Extend);
        assert_eq!(
            admit(Some(&off(10)), None, Some(&off(9))),
            Admit::OutOfOrder { buffered: off(10) }
        );
        assert_eq!(
            admit(Some(&off(10)), None, None),
            Admit::OutOfOrder { buffered: off(10) }
        );
        // Fenced at 20 (another writer stored 20): only a resume from 20 is taken.
        let fenced = Some(off(20));
        assert_eq!(admit(None, Some(&fenced), Some(&off(20))), Admit::Start);
        assert_eq!(
            admit(None, Some(&fenced), Some(&off(12))),
            Admit::Fenced { stored: Some(off(20)) }
        );
        // Fenced where the table had nothing: only a start from nothing.
        assert_eq!(admit(None, Some(&None), None), Admit::Start);
        assert_eq!(admit(None, Some(&None), Some(&off(1))), Admit::Fenced { stored: None });
    }

    #[test]
    fn a_flush_commits_finds_committed_or_fences_each_key() {
        let r = |expect: Option<i64>, end: i64| Range::new(expect.map(off), off(end));
        // First commit of a key: the table has nothing and the range starts from nothing.
        assert_eq!(decide(None, &r(None, 7)), Decision::Commit);
        assert_eq!(decide(Some(&off(7)), &r(Some(7), 9)), Decision::Commit);
        // The table holds the end: a lost answer of an earlier commit.
        assert_eq!(decide(Some(&off(9)), &r(Some(7), 9)), Decision::AlreadyCommitted);
        // Anything else is another writer's: behind, ahead, or a position where we
        // expected none.
        assert_eq!(decide(Some(&off(8)), &r(Some(7), 9)), Decision::Fenced);
        assert_eq!(decide(Some(&off(12)), &r(Some(7), 9)), Decision::Fenced);
        assert_eq!(decide(Some(&off(3)), &r(None, 9)), Decision::Fenced);
        assert_eq!(decide(None, &r(Some(7), 9)), Decision::Fenced);
        // Kinesis sequence numbers compare as stored text, like offsets.
        let seq = |s: &str| Position::Sequence(s.into());
        let range = Range::new(
            Some(seq("49590338271490256608559692538361571095921575989136588898")),
            seq("49590338271490256608559692538361571095921575989136588899"),
        );
        assert_eq!(decide(range.expect.as_ref(), &range), Decision::Commit);
        assert_eq!(decide(Some(&range.end), &range), Decision::AlreadyCommitted);

        let buffered = [
            (key("0"), r(Some(1), 2)),
            (key("1"), r(None, 5)),
            (key("2"), r(Some(4), 6)),
        ];
        let stored = |k: &SourceKey| match k.partition.as_str() {
            "0" => Some(off(1)),
            "1" => Some(off(5)),
            _ => Some(off(5)),
        };
        let p = plan(buffered.iter().map(|(k, r)| (k, r)), stored);
        assert_eq!(p.commit, [key("0")]);
        assert!(p.landed.is_empty());
        assert_eq!(p.committed, [key("1")]);
        assert_eq!(p.fenced, [(key("2"), Some(off(5)))]);
    }

    // A flush attempt committed 3..7 although its answer was lost, the table stalled, and
    // two more appends (7..9, 9..12) joined the range: the table's 7 is a step of the range,
    // not another writer's move.
    #[test]
    fn a_landed_attempt_inside_the_range_trims_it_instead_of_fencing() {
        let mut range = Range::new(Some(off(3)), off(5));
        range.extend(off(7));
        range.extend(off(7)); // a watermark that did not move: no step of its own
        range.extend(off(9));
        range.extend(off(12));
        assert_eq!(range.steps, [off(5), off(7), off(9)]);
        assert_eq!(decide(Some(&off(7)), &range), Decision::Landed(1));
        assert_eq!(decide(Some(&off(3)), &range), Decision::Commit);
        assert_eq!(decide(Some(&off(12)), &range), Decision::AlreadyCommitted);
        // Not a step: another writer's position, as before.
        assert_eq!(decide(Some(&off(8)), &range), Decision::Fenced);
        assert_eq!(decide(Some(&off(13)), &range), Decision::Fenced);
        assert_eq!(decide(None, &range), Decision::Fenced);

        let p = plan([(&key("0"), &range)], |_| Some(off(7)));
        assert_eq!(p.commit, [key("0")]);
        assert_eq!(p.landed, [(key("0"), 1)]);
        range.trim(1);
        assert_eq!(
            range,
            Range {
                expect: Some(off(7)),
                end: off(12),
                steps: vec![off(9)]
            }
        );
        assert_eq!(decide(Some(&off(7)), &range), Decision::Commit);
    }
}
