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
    addrs: HashMap<Kind, PerTable<Option<Addr<TableWriter>>>>,
    roles: Vec<TableRole>,
}

impl Writers {
    /// Opens (creating on first use) the clean and dead-letter tables of `kinds` and starts
    /// one writer actor per table, each on its own arbiter. Needs a running actix `System`.
    pub async fn start(
        tables: &TablesConfig,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        Self::start_roles(tables, None, cfg, kinds, on_commit).await
    }

    /// Like [`Writers::start`], plus the raw tables at `raw` (their own location).
    pub async fn start_with_raw(
        tables: &TablesConfig,
        raw: &TablesConfig,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        Self::start_roles(tables, Some(raw), cfg, kinds, on_commit).await
    }

    async fn start_roles(
        tables: &TablesConfig,
        raw: Option<&TablesConfig>,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        let mut roles = TableRole::CLEANED.to_vec();
        if raw.is_some() {
            roles.push(TableRole::Raw);
        }
        let mut addrs = HashMap::new();
        for &kind in kinds {
            let mut started: PerTable<Option<Addr<TableWriter>>> = PerTable::default();
            for &role in &roles {
                let at = if role == TableRole::Raw {
                    raw.unwrap_or(tables)
                } else {
                    tables
                };
                let name = role.table_name(kind);
                let sink = TableSink::open(at, &name, role.schema(kind), role.partition_columns(), cfg.clone()).await?;
                *started.get_mut(role) = Some(TableWriter::start_on_arbiter(sink, on_commit.clone()));
            }
            addrs.insert(kind, started);
        }
        Ok(Self { addrs, roles })
    }

    /// The roles whose tables these writers write.
    pub fn roles(&self) -> &[TableRole] {
        &self.roles
    }

    /// The writer of `kind`'s `role` table.
    pub fn get(&self, kind: Kind, role: TableRole) -> &Addr<TableWriter> {
        self.addrs
            .get(&kind)
            .and_then(|t| t.get(role).as_ref())
            .unwrap_or_else(|| panic!("no {role} writer started for {kind}"))
    }

    fn all(&self) -> impl Iterator<Item = (Kind, TableRole, &Addr<TableWriter>)> {
        self.addrs
            .iter()
            .flat_map(|(k, t)| t.iter().filter_map(move |(r, a)| a.as_ref().map(|a| (*k, r, a))))
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
