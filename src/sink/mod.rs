//! Delta Lake side: table locations, checkpoints stored in the data commit, writer actor.
//!
//! - [`table`]: folder or S3 locations, storage options, create-on-first-use.
//! - [`checkpoint`]: source positions encoded as Delta `txn` actions, and their replay.
//! - [`writer`]: the per-table buffer and commit logic, and its actor.
pub mod checkpoint;
pub mod table;
pub mod writer;

pub use checkpoint::{Position, SourceKey, SourceKind};
pub use table::{table_name, TablesConfig};
pub use writer::{
    Append, Checkpoints, CommitObserver, Flush, FlushOutcome, SinkStats, Stats, TableSink, TableWriter, WriterConfig,
    WriterError,
};

use std::collections::{BTreeMap, HashMap};

use actix::Addr;

use crate::clean::{dead_letter_schema, schema, Kind};

/// The running writers: a clean and a dead-letter table per kind.
pub struct Writers {
    addrs: HashMap<(Kind, bool), Addr<TableWriter>>,
}

impl Writers {
    /// Opens (creating on first use) the tables of `kinds` and starts one writer actor
    /// per table, each on its own arbiter. Needs a running actix `System`.
    pub async fn start(
        tables: &TablesConfig,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        let mut addrs = HashMap::new();
        for &kind in kinds {
            for dl in [false, true] {
                let s = if dl { dead_letter_schema() } else { schema(kind) };
                let sink = TableSink::open(tables, &table_name(kind, dl), s, cfg.clone()).await?;
                addrs.insert((kind, dl), TableWriter::start_on_arbiter(sink, on_commit.clone()));
            }
        }
        Ok(Self { addrs })
    }

    /// The writer of `kind`'s clean (`dead_letter = false`) or dead-letter table.
    pub fn get(&self, kind: Kind, dead_letter: bool) -> &Addr<TableWriter> {
        self.addrs
            .get(&(kind, dead_letter))
            .unwrap_or_else(|| panic!("no writer started for {kind} (dead letter: {dead_letter})"))
    }

    /// Positions stored in every table.
    pub async fn checkpoints(&self) -> Result<HashMap<(Kind, bool), HashMap<SourceKey, Position>>, WriterError> {
        let mut out = HashMap::new();
        for (k, a) in &self.addrs {
            out.insert(*k, a.send(Checkpoints).await.map_err(|_| WriterError::Stopped)??);
        }
        Ok(out)
    }

    /// Flushes every writer (in parallel) and returns what each committed.
    pub async fn flush_all(&self) -> Result<Vec<FlushOutcome>, WriterError> {
        let sends = self.addrs.values().map(|a| a.send(Flush));
        let mut out = Vec::new();
        for r in futures::future::join_all(sends).await {
            out.push(r.map_err(|_| WriterError::Stopped)??);
        }
        Ok(out)
    }

    /// Rows committed so far per table name.
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((kind, dl), a) in &self.addrs {
            let s = a.send(Stats).await.unwrap_or_default();
            out.insert(table_name(*kind, *dl), s.rows_committed);
        }
        out
    }
}
