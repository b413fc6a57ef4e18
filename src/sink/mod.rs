//! Delta Lake side: where the tables live, the positions stored in each commit, and the
//! per-table writer that buffers rows and commits them.
//!
//! - [`table`]: folder or S3 locations, storage options, create-on-first-use.
//! - [`checkpoint`]: source positions encoded as Delta `txn` actions, and their replay.
//! - [`damage`]: which file of a Delta log is damaged, once a table failed to load.
//! - [`plan`]: the pure rules of a writer: which appends it accepts, and which buffered
//!   keys a flush commits, finds committed already, or drops as fenced.
//! - [`table_sink`]: one table's buffer, Parquet files and commit (the I/O around `plan`).
//! - [`writer`]: the actix actor around a [`TableSink`], one per table.
//! - [`writers`]: the set of running writers, a clean and a dead-letter table per kind.

pub mod checkpoint;
mod config;
pub mod damage;
pub mod plan;
pub mod stall;
pub mod table;
pub mod table_sink;
pub mod writer;
mod writers;

use std::fmt;

use arrow_schema::SchemaRef;

use crate::clean::{dead_letter_schema, raw_schema, schema, Kind, RAW_PARTITION};

pub use checkpoint::{Position, SourceKey, SourceKind};
pub use config::{RawConfig, WriterConfig};
pub use stall::Stall;
pub use table::{TableError, TablesConfig};
pub use table_sink::{FlushOutcome, SinkStats, TableSink, WriterError};
pub use writer::{Append, Checkpoints, CommitObserver, Flush, Stats, TableWriter};
pub use writers::{Positions, Writers};

/// Which of a kind's tables: the clean rows, the records that could not be cleaned, or
/// every record's bytes as received (the raw layer, to reprocess from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableRole {
    Clean,
    DeadLetter,
    Raw,
}

impl TableRole {
    pub const ALL: [TableRole; 3] = [TableRole::Clean, TableRole::DeadLetter, TableRole::Raw];
    /// The tables a record's cleaning decides between: every record is in exactly one.
    pub const CLEANED: [TableRole; 2] = [TableRole::Clean, TableRole::DeadLetter];

    /// The table's name: `pin`, `pin_dead_letter` or `pin_raw`.
    pub fn table_name(self, kind: Kind) -> String {
        match self {
            TableRole::Clean => kind.as_str().to_string(),
            TableRole::DeadLetter => format!("{kind}_dead_letter"),
            TableRole::Raw => format!("{kind}_raw"),
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(self, kind: Kind) -> SchemaRef {
        match self {
            TableRole::Clean => schema(kind),
            TableRole::DeadLetter => dead_letter_schema(),
            TableRole::Raw => raw_schema(),
        }
    }

    /// The table's partition columns (the raw tables', by ingest date, for retention).
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            TableRole::Raw => &[RAW_PARTITION],
            _ => &[],
        }
    }

    /// The role a table name stands for, with its kind.
    pub fn of_table(name: &str) -> Option<(Kind, TableRole)> {
        Kind::ALL
            .iter()
            .flat_map(|k| TableRole::ALL.map(|r| (*k, r)))
            .find(|(k, r)| r.table_name(*k) == name)
    }
}

impl fmt::Display for TableRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableRole::Clean => "clean",
            TableRole::DeadLetter => "dead-letter",
            TableRole::Raw => "raw",
        })
    }
}

/// Every table name, in a stable order: each kind's clean table, its dead letters, its raw
/// records.
pub fn table_names() -> Vec<String> {
    Kind::ALL
        .iter()
        .flat_map(|k| TableRole::ALL.map(|r| r.table_name(*k)))
        .collect()
}

/// Rows per table name, as the summary lines of `run` and `batch` print them.
pub struct RowCounts<'a>(pub &'a std::collections::BTreeMap<String, u64>);

impl RowCounts<'_> {
    fn of(&self, role: TableRole) -> impl Iterator<Item = (&String, &u64)> {
        self.0
            .iter()
            .filter(move |(t, _)| TableRole::of_table(t).is_some_and(|(_, r)| r == role))
    }

    /// Rows of every dead-letter table together.
    pub fn dead_letters(&self) -> u64 {
        self.of(TableRole::DeadLetter).map(|(_, n)| n).sum()
    }

    /// Rows of every raw table together.
    pub fn raw(&self) -> u64 {
        self.of(TableRole::Raw).map(|(_, n)| n).sum()
    }

    /// The clean tables' counts: `geo=3 pin=4 user=3`.
    pub fn clean(&self) -> String {
        let rows: Vec<String> = self.of(TableRole::Clean).map(|(t, n)| format!("{t}={n}")).collect();
        rows.join(" ")
    }
}

/// One value per table of a kind, by [`TableRole`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerTable<T> {
    pub clean: T,
    pub dead_letter: T,
    pub raw: T,
}

impl<T> PerTable<T> {
    pub fn from_fn(mut f: impl FnMut(TableRole) -> T) -> Self {
        Self {
            clean: f(TableRole::Clean),
            dead_letter: f(TableRole::DeadLetter),
            raw: f(TableRole::Raw),
        }
    }

    pub fn get(&self, role: TableRole) -> &T {
        match role {
            TableRole::Clean => &self.clean,
            TableRole::DeadLetter => &self.dead_letter,
            TableRole::Raw => &self.raw,
        }
    }

    pub fn get_mut(&mut self, role: TableRole) -> &mut T {
        match role {
            TableRole::Clean => &mut self.clean,
            TableRole::DeadLetter => &mut self.dead_letter,
            TableRole::Raw => &mut self.raw,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (TableRole, &T)> {
        TableRole::ALL.into_iter().map(move |r| (r, self.get(r)))
    }

    pub fn map<U>(self, mut f: impl FnMut(TableRole, T) -> U) -> PerTable<U> {
        PerTable {
            clean: f(TableRole::Clean, self.clean),
            dead_letter: f(TableRole::DeadLetter, self.dead_letter),
            raw: f(TableRole::Raw, self.raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_name_the_tables() {
        assert_eq!(TableRole::Clean.table_name(Kind::Pin), "pin");
        assert_eq!(TableRole::DeadLetter.table_name(Kind::User), "user_dead_letter");
        assert_eq!(TableRole::Raw.table_name(Kind::Geo), "geo_raw");
        assert_eq!(table_names().len(), 9);
        assert_eq!(&table_names()[..3], ["pin", "pin_dead_letter", "pin_raw"]);
        assert_eq!(TableRole::of_table("user_raw"), Some((Kind::User, TableRole::Raw)));
        assert_eq!(TableRole::of_table("users"), None);
        let p = PerTable::from_fn(|r| r == TableRole::DeadLetter);
        assert_eq!(p.iter().filter(|(_, v)| **v).count(), 1);
        assert!(*p.get(TableRole::DeadLetter));
        let counts = PerTable {
            clean: 0,
            dead_letter: 1,
            raw: 0,
        };
        assert_eq!(p.map(|_, v| u8::from(v)), counts);
    }
}
