//! The routing rule of exactly-once, written once for every source: Kafka partitions,
//! Kinesis shards, batch objects, `pinpipe replay`, and the benches.
//!
//! A source partition (a [`SourceKey`]) resumes from the positions its kind's tables store
//! for it, one per table. Each record read goes to its kind's raw table (its bytes as
//! received), and, cleaned, to exactly one of the clean and dead-letter tables; **to each
//! table only if that table's stored position does not already cover it**: a record
//! re-read after a crash or a rebalance is then dropped where it was committed and written
//! where it was not. Cleaning is deterministic, so a re-read record is routed as the first
//! time.
//!
//! A hand-over gives every table the rows routed to it and the position range they cover:
//! `expect` (what the table held before them: the stored position, or the end of the
//! previous hand-over) and `end` (the mark of the last record seen). A table with no new
//! rows still gets the range (a watermark), so a resume never re-routes a record another
//! table committed. A table whose stored position already covers the last record gets
//! nothing.
//!
//! Positions are compared through [`Position::covers`] with each record's *mark*: the
//! position a table holds once that record is in it (Kafka: the offset after it; Kinesis:
//! its sequence number; batch: its line number).
//!
//! A raw table created after its clean tables (a process upgraded to the raw layer) starts
//! where they are: records cleaned before it existed are not read again for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::clean::{
    self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage, RawBatchBuilder, RecordMeta, Reject,
};
use crate::metrics::metrics;
use crate::sink::{Append, PerTable, Position, SourceKey, TableRole, WriterError, Writers};
use crate::sources::kpl::{self, Split};

/// Totals of a run over all its sources, shared with progress displays.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Records read.
    pub records: AtomicU64,
    /// Records a table already held, not written again.
    pub filtered: AtomicU64,
}

/// Where one table stands for this source partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Route {
    /// Records up to here are in the table already (its stored position when the source
    /// resumed; for a new raw table, where the clean tables were).
    covered: Option<Position>,
    /// What the table holds before the rows not handed over yet (compare-and-set input).
    expect: Option<Position>,
}

impl Route {
    fn covers(&self, mark: &Position) -> bool {
        self.covered.as_ref().is_some_and(|c| c.covers(mark))
    }
}

/// Where a source partition resumes reading, from what its tables store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// From the lowest stored position (Kafka: that offset; Kinesis: after that sequence
    /// number); records other tables have are filtered by the router.
    From(Position),
    /// A table has no position: its records may be anywhere, read from the beginning.
    Beginning,
    /// No table has a position: a new partition (the source's config says where to start).
    New,
}

/// What each active table covers: its stored position, except a raw table with none
/// while the clean tables have theirs, which starts where they are.
fn covered(stored: &PerTable<Option<Position>>, roles: &[TableRole]) -> PerTable<Option<Option<Position>>> {
    let lowest = match (&stored.clean, &stored.dead_letter) {
        (Some(a), Some(b)) => Some(if a.covers(b) { b.clone() } else { a.clone() }),
        _ => None,
    };
    PerTable::from_fn(|role| {
        roles.contains(&role).then(|| match (role, stored.get(role)) {
            (TableRole::Raw, None) => lowest.clone(),
            (_, p) => p.clone(),
        })
    })
}

/// The resume rule of every source, over the tables the source writes (`roles`).
pub fn resume(stored: &PerTable<Option<Position>>, roles: &[TableRole]) -> Resume {
    let covered = covered(stored, roles);
    let active: Vec<&Option<Position>> = covered.iter().filter_map(|(_, c)| c.as_ref()).collect();
    if active.iter().all(|c| c.is_none()) {
        return Resume::New;
    }
    let mut lowest: Option<&Position> = None;
    for c in active {
        let Some(p) = c else { return Resume::Beginning };
        if lowest.is_none_or(|l| l.covers(p)) {
            lowest = Some(p);
        }
    }
    Resume::From(lowest.expect("some table has a position").clone())
}

/// What [`Router::route`] did with a record in the clean and dead-letter tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    Clean,
    DeadLetter,
    /// Its table already has it.
    Covered,
}

/// One source partition's routing state: the tables' positions and the rows not handed
/// over yet.
pub struct Router {
    kind: Kind,
    key: SourceKey,
    /// The tables written, `None` for a role not written (raw off, replay).
    tables: PerTable<Option<Route>>,
    clean: CleanBatchBuilder,
    dead: DeadLetterBatchBuilder,
    raw: RawBatchBuilder,
    /// The mark of the last record seen (or skipped to).
    last: Option<Position>,
    /// When the oldest record not handed over yet was read (the writers age rows from it).
    read_at: Option<Instant>,
    max_record_bytes: usize,
    dead_letter_table: String,
}

impl Router {
    /// A router for `key`, a source partition of `kind`, writing the tables of `roles`,
    /// which store `stored`.
    pub fn new(
        kind: Kind,
        key: SourceKey,
        stored: PerTable<Option<Position>>,
        roles: &[TableRole],
        max_record_bytes: usize,
    ) -> Self {
        let covered = covered(&stored, roles);
        let tables = PerTable::from_fn(|role| {
            covered.get(role).clone().map(|c| Route {
                covered: c,
                expect: stored.get(role).clone(),
            })
        });
        Self {
            kind,
            tables,
            key,
            clean: CleanBatchBuilder::new(kind),
            dead: DeadLetterBatchBuilder::default(),
            raw: RawBatchBuilder::default(),
            last: None,
            read_at: None,
            max_record_bytes,
            dead_letter_table: TableRole::DeadLetter.table_name(kind),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn key(&self) -> &SourceKey {
        &self.key
    }

    /// When the oldest record not handed over yet was read (`None`: none is waiting). The
    /// sources hand over by its age; the writers age the rows from it.
    pub fn read_at(&self) -> Option<Instant> {
        self.read_at
    }

    /// Rows waiting for the next hand-over (in the clean and dead-letter tables).
    pub fn buffered(&self) -> usize {
        self.clean.len() + self.dead.len()
    }

    /// Routes `raw` (the record at `mark`, shown as `position` in the lineage): its bytes
    /// to the raw table, its cleaned row to the clean or the dead-letter table, each
    /// unless that table already has it.
    pub fn route(
        &mut self,
        raw: &[u8],
        meta: RecordMeta<'_>,
        mark: Position,
        position: &str,
        ingested_at: i64,
    ) -> Routed {
        self.keep_raw(raw, meta, &mark, position, ingested_at);
        let routed = self.clean_one(raw, None, &mark, position, ingested_at);
        self.seen(mark);
        routed
    }

    /// Routes a Kinesis record (sequence number `seq`), splitting a KPL aggregate into its
    /// user records: the raw table keeps the record as received, once; each user record is
    /// cleaned on its own, its lineage position `<seq>:<index>`; a corrupt aggregate is one
    /// dead letter with all its bytes. Every user record of an aggregate has the record's
    /// mark: Kinesis hands records over whole, so a table's position is always between
    /// records, and a resume re-reads an aggregate entirely or not at all.
    pub fn route_kinesis(&mut self, raw: &[u8], meta: RecordMeta<'_>, seq: &str, ingested_at: i64) -> Tally {
        let mark = Position::Sequence(seq.to_string());
        let mut tally = Tally::default();
        match kpl::split(raw) {
            Split::Plain => tally.add(self.route(raw, meta, mark, seq, ingested_at)),
            Split::Records(records) => {
                self.keep_raw(raw, meta, &mark, seq, ingested_at);
                let mut position = String::with_capacity(seq.len() + 6);
                for (i, r) in records.iter().enumerate() {
                    position.clear();
                    position.push_str(seq);
                    position.push(':');
                    position.push_str(itoa::Buffer::new().format(i));
                    tally.add(self.clean_one(r.data, None, &mark, &position, ingested_at));
                }
                self.seen(mark);
            }
            Split::Corrupt(why) => {
                self.keep_raw(raw, meta, &mark, seq, ingested_at);
                let reject = Reject::CorruptAggregate(why);
                tally.add(self.clean_one(raw, Some(reject), &mark, seq, ingested_at));
                self.seen(mark);
            }
        }
        tally
    }

    /// The raw table's row for a record, unless the table has it.
    fn keep_raw(&mut self, raw: &[u8], meta: RecordMeta<'_>, mark: &Position, position: &str, ingested_at: i64) {
        if self.tables.raw.as_ref().is_some_and(|t| !t.covers(mark)) {
            self.raw.append(&lineage(&self.key, ingested_at), position, raw, meta);
        }
    }

    /// Cleans `bytes` (or rejects them for `reject`) into the clean or the dead-letter
    /// table, unless that table has the record.
    fn clean_one(
        &mut self,
        bytes: &[u8],
        reject: Option<Reject>,
        mark: &Position,
        position: &str,
        ingested_at: i64,
    ) -> Routed {
        let lineage = lineage(&self.key, ingested_at);
        let covered = |t: &Option<Route>| t.as_ref().is_none_or(|t| t.covers(mark));
        let cleaned = match reject {
            Some(r) => Err(r),
            None => clean::clean(self.kind, bytes, self.max_record_bytes),
        };
        match cleaned {
            Ok(row) if !covered(&self.tables.clean) => {
                self.clean.append(&row, &lineage, position);
                Routed::Clean
            }
            Err(reject) if !covered(&self.tables.dead_letter) => {
                metrics()
                    .dead_letters
                    .with_label_values(&[self.dead_letter_table.as_str(), reject.rule()])
                    .inc();
                self.dead.append(&lineage, position, &reject.to_string(), bytes);
                Routed::DeadLetter
            }
            _ => Routed::Covered,
        }
    }

    /// Records up to `mark` were read without holding a record (blank lines at the end of
    /// an object): the tables' positions move past them at the next hand-over.
    pub fn skip_to(&mut self, mark: Position) {
        self.seen(mark);
    }

    fn seen(&mut self, mark: Position) {
        self.last = Some(mark);
        // One clock read per hand-over, not per record.
        self.read_at.get_or_insert_with(Instant::now);
    }

    /// The appends that bring each table up to the last record seen, with the rows routed
    /// to it; the next hand-over continues from there.
    pub fn hand_over(&mut self) -> Vec<(TableRole, Append)> {
        let Some(end) = self.last.clone() else {
            return Vec::new();
        };
        let read_at = self.read_at.take();
        let mut out = Vec::with_capacity(3);
        for role in TableRole::ALL {
            let batch = match role {
                TableRole::Clean => (!self.clean.is_empty()).then(|| self.clean.finish()),
                TableRole::DeadLetter => (!self.dead.is_empty()).then(|| self.dead.finish()),
                TableRole::Raw => (!self.raw.is_empty()).then(|| self.raw.finish()),
            };
            let Some(route) = self.tables.get_mut(role) else {
                continue;
            };
            if route.expect.as_ref() == Some(&end) || route.covers(&end) {
                // Nothing new for this table (no rows can be routed to a table that
                // already holds the last record).
                debug_assert!(batch.is_none(), "rows for a table that has them");
                continue;
            }
            let append = Append {
                key: self.key.clone(),
                expect: route.expect.replace(end.clone()),
                end: end.clone(),
                batch,
                read_at,
            };
            out.push((role, append));
        }
        out
    }

    /// Hands the rows and positions over to the writers of this kind's tables, in order;
    /// the first error (a fenced key, a stopped writer) ends it. A stalled table keeps the
    /// rows it was handed ([`WriterError::Stalled`]): the other table still gets its own,
    /// then that error is returned.
    pub async fn send(&mut self, writers: &Writers) -> Result<(), WriterError> {
        let mut stalled = None;
        for (role, append) in self.hand_over() {
            let sent = writers.get(self.kind, role).send(append).await;
            match sent.map_err(|_| WriterError::Stopped)? {
                Ok(()) => {}
                Err(e @ WriterError::Stalled { .. }) => {
                    stalled.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        stalled.map_or(Ok(()), Err)
    }
}

/// The lineage columns of a row read now from `key`.
fn lineage(key: &SourceKey, ingested_at: i64) -> Lineage<'_> {
    Lineage {
        source: key.source.as_str(),
        stream: &key.stream,
        partition: &key.partition,
        ingested_at,
    }
}

/// What [`Router::route_kinesis`] did with a Kinesis record's user records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// User records routed (1 for a plain record or a corrupt aggregate).
    pub records: u64,
    /// Of them, records their table already had.
    pub covered: u64,
}

impl Tally {
    /// The tally of one routed record.
    pub fn of(routed: Routed) -> Self {
        let mut t = Self::default();
        t.add(routed);
        t
    }

    pub fn add(&mut self, routed: Routed) {
        self.records += 1;
        self.covered += u64::from(routed == Routed::Covered);
    }
}

impl RunStats {
    /// Counts one routed record.
    pub fn count(&self, routed: Routed) {
        self.records.fetch_add(1, Ordering::Relaxed);
        if routed == Routed::Covered {
            self.filtered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a Kinesis record's user records.
    pub fn count_tally(&self, tally: Tally) {
        self.records.fetch_add(tally.records, Ordering::Relaxed);
        self.filtered.fetch_add(tally.covered, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourceKind;

    const MAX: usize = clean::DEFAULT_MAX_RECORD_BYTES;
    const GOOD: &[u8] = br#"{"ind": 1, "age": 30}"#;
    const BAD: &[u8] = br#"{"ind": 1, "age": "old"}"#;
    const CLEANED: &[TableRole] = &TableRole::CLEANED;
    const ALL: &[TableRole] = &TableRole::ALL;

    fn stored(clean: Option<Position>, dead: Option<Position>, raw: Option<Position>) -> PerTable<Option<Position>> {
        PerTable {
            clean,
            dead_letter: dead,
            raw,
        }
    }

    fn router(clean: Option<Position>, dead: Option<Position>) -> Router {
        let key = SourceKey::new(SourceKind::Kafka, "t.user", "0");
        Router::new(Kind::User, key, stored(clean, dead, None), CLEANED, MAX)
    }

    /// Routes a record with no key or timestamp.
    fn route(r: &mut Router, raw: &[u8], mark: Position, position: &str) -> Routed {
        r.route(raw, RecordMeta::default(), mark, position, 0)
    }

    /// (role, expect, end, rows) of each append.
    fn summary(appends: &[(TableRole, Append)]) -> Vec<(TableRole, Option<Position>, Position, usize)> {
        appends
            .iter()
            .map(|(r, a)| {
                (
                    *r,
                    a.expect.clone(),
                    a.end.clone(),
                    a.batch.as_ref().map_or(0, |b| b.num_rows()),
                )
            })
            .collect()
    }

    fn off(n: i64) -> Position {
        Position::Offset(n)
    }

    fn seq(s: &str) -> Position {
        Position::Sequence(s.into())
    }

    #[test]
    fn a_new_partition_routes_every_record_and_moves_both_tables() {
        let mut r = router(None, None);
        assert_eq!(resume(&PerTable::default(), CLEANED), Resume::New);
        // Kafka offsets 0..3: marks are the next offsets 1..4.
        for (o, raw) in [GOOD, BAD, GOOD].iter().enumerate() {
            let o = o as i64;
            route(&mut r, raw, off(o + 1), &o.to_string());
        }
        assert_eq!(r.buffered(), 3);
        let a = r.hand_over();
        assert_eq!(
            summary(&a),
            [
                (TableRole::Clean, None, off(3), 2),
                (TableRole::DeadLetter, None, off(3), 1)
            ]
        );
        // Nothing new: nothing to hand over. Then clean rows only: the dead-letter table
        // still gets the watermark, so a resume never re-routes them.
        assert!(r.hand_over().is_empty());
        route(&mut r, GOOD, off(4), "3");
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, Some(off(3)), off(4), 1),
                (TableRole::DeadLetter, Some(off(3)), off(4), 0)
            ]
        );
    }

    #[test]
    fn appends_carry_when_their_oldest_record_was_read() {
        let mut r = router(None, None);
        assert_eq!(r.read_at(), None, "nothing read yet");
        let before = Instant::now();
        route(&mut r, GOOD, off(1), "0");
        let first = r.read_at().expect("a record is waiting");
        assert!(first >= before);
        // A later record does not make the waiting rows younger.
        route(&mut r, BAD, off(2), "1");
        assert_eq!(r.read_at(), Some(first));
        let a = r.hand_over();
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|(_, a)| a.read_at == Some(first)));
        assert_eq!(r.read_at(), None, "handed over with the rows");
        route(&mut r, GOOD, off(3), "2");
        assert!(r.read_at().is_some_and(|t| t >= first));
    }

    #[test]
    fn a_resumed_partition_filters_what_each_table_has() {
        // The clean table committed up to offset 10, the dead-letter table up to 5.
        let mut r = router(Some(off(10)), Some(off(5)));
        assert_eq!(
            resume(&stored(Some(off(10)), Some(off(5)), None), CLEANED),
            Resume::From(off(5))
        );
        assert_eq!(resume(&stored(Some(off(10)), None, None), CLEANED), Resume::Beginning);
        let routed: Vec<Routed> = (5..12)
            .map(|o| route(&mut r, if o % 2 == 0 { GOOD } else { BAD }, off(o + 1), "x"))
            .collect();
        use Routed::*;
        // Offsets 5..=9 are below the clean position: only the dead letters among them
        // are new; 10 and 11 are new for both.
        assert_eq!(
            routed,
            [DeadLetter, Covered, DeadLetter, Covered, DeadLetter, Clean, DeadLetter]
        );
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, Some(off(10)), off(12), 1),
                (TableRole::DeadLetter, Some(off(5)), off(12), 4)
            ]
        );
    }

    #[test]
    fn a_table_ahead_of_the_records_gets_nothing() {
        // The dead-letter table is ahead (another table was behind when we resumed).
        let mut r = router(Some(off(2)), Some(off(8)));
        for o in 2..5 {
            route(&mut r, GOOD, off(o + 1), "x");
        }
        assert_eq!(summary(&r.hand_over()), [(TableRole::Clean, Some(off(2)), off(5), 3)]);
        for o in 5..9 {
            route(&mut r, BAD, off(o + 1), "x");
        }
        // Up to 9: offsets 5..=7 are the dead-letter table's already; the clean table
        // moves to 9 with no rows.
        let a = r.hand_over();
        assert_eq!(
            summary(&a),
            [
                (TableRole::Clean, Some(off(5)), off(9), 0),
                (TableRole::DeadLetter, Some(off(8)), off(9), 1)
            ]
        );
    }

    #[test]
    fn the_raw_table_gets_every_record_once() {
        let key = SourceKey::new(SourceKind::Kafka, "t.user", "0");
        // A new partition: every record to raw, and to its cleaned table.
        let mut r = Router::new(Kind::User, key.clone(), PerTable::default(), ALL, MAX);
        for (o, raw) in [GOOD, BAD, GOOD].iter().enumerate() {
            let meta = RecordMeta {
                key: Some(b"k"),
                timestamp_us: Some(1),
            };
            r.route(raw, meta, off(o as i64 + 1), "x", 0);
        }
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, None, off(3), 2),
                (TableRole::DeadLetter, None, off(3), 1),
                (TableRole::Raw, None, off(3), 3)
            ]
        );
        // The raw table behind the others (a crash between their commits): the re-read
        // records go to raw only.
        let behind = stored(Some(off(3)), Some(off(3)), Some(off(1)));
        assert_eq!(resume(&behind, ALL), Resume::From(off(1)));
        let mut r = Router::new(Kind::User, key.clone(), behind, ALL, MAX);
        assert_eq!(route(&mut r, BAD, off(2), "1"), Routed::Covered);
        assert_eq!(route(&mut r, GOOD, off(3), "2"), Routed::Covered);
        assert_eq!(route(&mut r, GOOD, off(4), "3"), Routed::Clean);
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, Some(off(3)), off(4), 1),
                (TableRole::DeadLetter, Some(off(3)), off(4), 0),
                (TableRole::Raw, Some(off(1)), off(4), 3)
            ]
        );
    }

    #[test]
    fn a_new_raw_table_starts_where_the_clean_tables_are() {
        let key = SourceKey::new(SourceKind::Kafka, "t.user", "0");
        // Tables from before the raw layer: clean at 10, dead letters at 8, no raw table.
        let old = stored(Some(off(10)), Some(off(8)), None);
        assert_eq!(resume(&old, ALL), Resume::From(off(8)));
        let mut r = Router::new(Kind::User, key, old, ALL, MAX);
        for o in 8..12 {
            route(&mut r, GOOD, off(o + 1), "x");
        }
        // Offset 8 (mark 9) is past the dead letters' 8 but the raw table starts there:
        // records 8..=11 all go to raw, from a table that holds nothing yet.
        let a = summary(&r.hand_over());
        assert_eq!(a[2], (TableRole::Raw, None, off(12), 4));
        assert_eq!(a[0], (TableRole::Clean, Some(off(10)), off(12), 2));
        // Nothing at all yet: the raw table is new like the others.
        assert_eq!(resume(&PerTable::default(), ALL), Resume::New);
        // The clean tables deleted (to rebuild them), the raw table kept: read it all again.
        assert_eq!(resume(&stored(None, None, Some(off(4))), ALL), Resume::Beginning);
    }

    #[test]
    fn kinesis_sequence_numbers_and_batch_lines() {
        let seq = |s: &str| Position::Sequence(s.into());
        let key = SourceKey::new(SourceKind::Kinesis, "streaming-x-user", "shardId-000000000000");
        let at = stored(
            Some(seq("49590338271490256608559692538361571095921575989136588898")),
            None,
            None,
        );
        let mut r = Router::new(Kind::User, key, at, CLEANED, MAX);
        // The stored number itself is covered (Kinesis stores the last one committed).
        assert_eq!(
            route(
                &mut r,
                GOOD,
                seq("49590338271490256608559692538361571095921575989136588898"),
                "s"
            ),
            Routed::Covered
        );
        assert_eq!(
            route(
                &mut r,
                GOOD,
                seq("49590338271490256608559692538361571095921575989136588899"),
                "s"
            ),
            Routed::Clean
        );
        assert_eq!(r.hand_over().len(), 2);

        // Batch: lines consumed; blank lines at the end still move the position.
        let key = SourceKey::new(SourceKind::Batch, "t.user", "topics/t.user/partition=0/t.user+0+0.json");
        let mut r = Router::new(Kind::User, key, stored(Some(off(1)), Some(off(1)), None), CLEANED, MAX);
        assert_eq!(route(&mut r, GOOD, off(1), "1"), Routed::Covered);
        assert_eq!(route(&mut r, BAD, off(2), "2"), Routed::DeadLetter);
        r.skip_to(off(4));
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, Some(off(1)), off(4), 0),
                (TableRole::DeadLetter, Some(off(1)), off(4), 1)
            ]
        );
    }

    #[test]
    fn lineage_comes_from_the_key() {
        let mut r = router(None, None);
        r.route(GOOD, RecordMeta::default(), off(8), "7", 42);
        let (_, a) = r.hand_over().remove(0);
        let b = a.batch.unwrap();
        let col = |name: &str| {
            let c = b.column_by_name(name).unwrap();
            arrow_array::cast::AsArray::as_string::<i32>(c).value(0).to_string()
        };
        assert_eq!(
            (col("_source"), col("_stream"), col("_partition"), col("_position")),
            ("kafka".into(), "t.user".into(), "0".into(), "7".into())
        );
    }

    /// The strings of column `name` in a hand-over's batch.
    fn column(a: &Append, name: &str) -> Vec<String> {
        let b = a.batch.as_ref().unwrap();
        use arrow_array::{cast::AsArray, Array};
        let c = b.column_by_name(name).unwrap().as_string::<i32>();
        (0..c.len()).map(|i| c.value(i).to_string()).collect()
    }

    #[test]
    fn a_kpl_aggregate_is_split_kept_whole_raw_and_filtered_as_one_record() {
        let kinesis = || SourceKey::new(SourceKind::Kinesis, "s", "shardId-0");
        let agg = kpl::aggregate(&[("a", GOOD), ("b", BAD), ("a", GOOD)]);
        let mut corrupt = agg.clone();
        corrupt[9] ^= 0x40;

        let mut r = Router::new(Kind::User, kinesis(), PerTable::default(), ALL, MAX);
        assert_eq!(
            r.route_kinesis(GOOD, RecordMeta::default(), "10", 0),
            Tally { records: 1, covered: 0 }
        );
        assert_eq!(
            r.route_kinesis(&agg, RecordMeta::default(), "11", 0),
            Tally { records: 3, covered: 0 }
        );
        assert_eq!(
            r.route_kinesis(&corrupt, RecordMeta::default(), "12", 0),
            Tally { records: 1, covered: 0 }
        );
        let appends = r.hand_over();
        let by_role = |role| &appends.iter().find(|(r, _)| *r == role).unwrap().1;
        assert_eq!(column(by_role(TableRole::Clean), "_position"), ["10", "11:0", "11:2"]);
        assert_eq!(column(by_role(TableRole::DeadLetter), "_position"), ["11:1", "12"]);
        assert!(column(by_role(TableRole::DeadLetter), "error")[1].starts_with("corrupt KPL aggregate: "));
        // The raw table: each Kinesis record once, the aggregate as received.
        assert_eq!(column(by_role(TableRole::Raw), "_position"), ["10", "11", "12"]);
        for (_, a) in &appends {
            assert_eq!(a.end, seq("12"));
        }

        // Tables at "11" (after a crash): the aggregate is covered entirely, "12" is not.
        let at = |p: &str| Some(seq(p));
        let mut r = Router::new(Kind::User, kinesis(), stored(at("11"), at("11"), at("11")), ALL, MAX);
        assert_eq!(
            r.route_kinesis(&agg, RecordMeta::default(), "11", 0),
            Tally { records: 3, covered: 3 }
        );
        assert_eq!(
            r.route_kinesis(&corrupt, RecordMeta::default(), "12", 0),
            Tally { records: 1, covered: 0 }
        );
        assert_eq!(
            summary(&r.hand_over()),
            [
                (TableRole::Clean, at("11"), seq("12"), 0),
                (TableRole::DeadLetter, at("11"), seq("12"), 1),
                (TableRole::Raw, at("11"), seq("12"), 1),
            ]
        );
    }
}
