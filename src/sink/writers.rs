//! The running writers of a process: one [`TableWriter`] actor per table, a clean and a
//! dead-letter table per kind.

use std::collections::{BTreeMap, HashMap};

use actix::Addr;

use super::writer::{Checkpoints, CommitObserver, Flush, Stats, TableWriter};
use super::{
    FlushOutcome, PerTable, Position, SourceKey, TableRole, TableSink, TablesConfig, WriterConfig, WriterError,
};
use crate::clean::Kind;

/// The positions stored in the tables of every kind, as of their newest versions.
#[derive(Debug, Clone, Default)]
pub struct Positions(HashMap<Kind, PerTable<HashMap<SourceKey, Position>>>);

impl Positions {
    /// Where `key` (a source partition of `kind`) stands in each of its kind's tables.
    pub fn of(&self, kind: Kind, key: &SourceKey) -> PerTable<Option<Position>> {
        PerTable::from_fn(|role| self.0.get(&kind).and_then(|t| t.get(role).get(key)).cloned())
    }
}

/// The running writers.
pub struct Writers {
    addrs: HashMap<Kind, PerTable<Addr<TableWriter>>>,
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
            let mut started = Vec::new();
            for role in TableRole::ALL {
                let sink = TableSink::open(tables, &role.table_name(kind), role.schema(kind), cfg.clone()).await?;
                started.push(TableWriter::start_on_arbiter(sink, on_commit.clone()));
            }
            let [clean, dead_letter]: [Addr<TableWriter>; 2] = started.try_into().expect("one writer per role");
            addrs.insert(kind, PerTable { clean, dead_letter });
        }
        Ok(Self { addrs })
    }

    /// The writer of `kind`'s `role` table.
    pub fn get(&self, kind: Kind, role: TableRole) -> &Addr<TableWriter> {
        self.addrs
            .get(&kind)
            .map(|t| t.get(role))
            .unwrap_or_else(|| panic!("no writers started for {kind}"))
    }

    fn all(&self) -> impl Iterator<Item = (Kind, TableRole, &Addr<TableWriter>)> {
        self.addrs
            .iter()
            .flat_map(|(k, t)| t.iter().map(move |(r, a)| (*k, r, a)))
    }

    /// Positions stored in every table.
    pub async fn checkpoints(&self) -> Result<Positions, WriterError> {
        let mut out: HashMap<Kind, PerTable<HashMap<SourceKey, Position>>> = HashMap::new();
        for (kind, role, a) in self.all() {
            let stored = a.send(Checkpoints).await.map_err(|_| WriterError::Stopped)??;
            *out.entry(kind).or_default().get_mut(role) = stored;
        }
        Ok(Positions(out))
    }

    /// Flushes every writer (in parallel) and returns what each committed.
    pub async fn flush_all(&self) -> Result<Vec<FlushOutcome>, WriterError> {
        let sends = self.all().map(|(_, _, a)| a.send(Flush));
        let mut out = Vec::new();
        for r in futures::future::join_all(sends).await {
            out.push(r.map_err(|_| WriterError::Stopped)??);
        }
        Ok(out)
    }

    /// Rows committed so far per table name.
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, role, a) in self.all() {
            let s = a.send(Stats).await.unwrap_or_default();
            out.insert(role.table_name(kind), s.rows_committed);
        }
        out
    }
}
