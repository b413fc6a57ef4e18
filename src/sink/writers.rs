//! The running writers of a process: one [`TableWriter`] actor per table, a clean, a
//! dead-letter and (with `[raw]`) a raw table per kind, and each table's [`Stall`] (readable without asking the
//! writer, which is busy retrying then): the sources stop handing a stalled kind's rows
//! over, and readiness names the stalled tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::Addr;

use super::writer::{Checkpoints, CommitObserver, Flush, Stats, TableWriter};
use super::{
    FlushOutcome, PerTable, Position, RawConfig, SourceKey, Stall, TableRole, TableSink, TablesConfig, WriterConfig,
    WriterError,
};
use crate::clean::Kind;
use crate::metrics::Readiness;

/// The positions stored in the tables of every kind, as of their newest versions.
#[derive(Debug, Clone, Default)]
pub struct Positions(HashMap<Kind, PerTable<HashMap<SourceKey, Position>>>);

impl Positions {
    /// Where `key` (a source partition of `kind`) stands in each of its kind's tables.
    pub fn of(&self, kind: Kind, key: &SourceKey) -> PerTable<Option<Position>> {
        PerTable::from_fn(|role| self.0.get(&kind).and_then(|t| t.get(role).get(key)).cloned())
    }
}

/// The running writers (a clone addresses the same actors).
#[derive(Clone)]
pub struct Writers {
    addrs: HashMap<Kind, PerTable<Option<Addr<TableWriter>>>>,
    roles: Vec<TableRole>,
    stalls: HashMap<Kind, PerTable<Option<Arc<Stall>>>>,
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

    /// Like [`Writers::start`], plus the raw tables (`raw`: their location and level).
    pub async fn start_with_raw(
        tables: &TablesConfig,
        raw: &RawConfig,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        Self::start_roles(tables, Some(raw), cfg, kinds, on_commit).await
    }

    async fn start_roles(
        tables: &TablesConfig,
        raw: Option<&RawConfig>,
        cfg: &WriterConfig,
        kinds: &[Kind],
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, WriterError> {
        let mut roles = TableRole::CLEANED.to_vec();
        if raw.is_some() {
            roles.push(TableRole::Raw);
        }
        let raw_tables = raw.map(|r| r.tables(tables));
        let raw_cfg = raw.map_or_else(|| cfg.clone(), |r| r.writer(cfg));
        let mut addrs = HashMap::new();
        let mut stalls = HashMap::new();
        for &kind in kinds {
            let mut started: PerTable<Option<Addr<TableWriter>>> = PerTable::default();
            let mut kind_stalls: PerTable<Option<Arc<Stall>>> = PerTable::default();
            for &role in &roles {
                let at = if role == TableRole::Raw {
                    raw_tables.as_ref().unwrap_or(tables)
                } else {
                    tables
                };
                let name = role.table_name(kind);
                let cfg = if role == TableRole::Raw {
                    raw_cfg.clone()
                } else {
                    cfg.clone()
                };
                let sink = TableSink::open(at, &name, role.schema(kind), role.partition_columns(), cfg).await?;
                *kind_stalls.get_mut(role) = Some(sink.stall());
                *started.get_mut(role) = Some(TableWriter::start_on_arbiter(sink, on_commit.clone()));
            }
            addrs.insert(kind, started);
            stalls.insert(kind, kind_stalls);
        }
        Ok(Self { addrs, roles, stalls })
    }

    /// The roles whose tables these writers write.
    pub fn roles(&self) -> &[TableRole] {
        &self.roles
    }

    /// Whether a table of `kind` is stalled: its sources stop handing rows over until it
    /// recovers (the other kinds go on).
    pub fn stalled(&self, kind: Kind) -> bool {
        self.stalls
            .get(&kind)
            .is_some_and(|t| t.iter().any(|(_, s)| s.as_ref().is_some_and(|s| s.is_stalled())))
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

    /// Flushes the tables of `kind` (in parallel).
    pub async fn flush_kind(&self, kind: Kind) -> Result<(), WriterError> {
        let sends = self.roles.iter().map(|&role| self.get(kind, role).send(Flush));
        for r in futures::future::join_all(sends).await {
            r.map_err(|_| WriterError::Stopped)??;
        }
        Ok(())
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

impl Readiness for Writers {
    /// `table pin: commits stopped for 42 s: <error>` per stalled table.
    fn not_ready(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stalls
            .iter()
            .flat_map(|(kind, t)| t.iter().map(move |(role, s)| (role.table_name(*kind), s)))
            .filter_map(|(name, s)| Some(format!("table {name}: {}", s.as_ref()?.reason()?)))
            .collect();
        out.sort();
        out
    }
}
