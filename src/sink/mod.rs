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
pub mod table;
pub mod table_sink;
pub mod writer;
mod writers;

use std::fmt;

use arrow_schema::SchemaRef;

use crate::clean::{dead_letter_schema, schema, Kind};

pub use checkpoint::{Position, SourceKey, SourceKind};
pub use config::WriterConfig;
pub use table::{TableError, TablesConfig};
pub use table_sink::{FlushOutcome, SinkStats, Stall, TableSink, WriterError};
pub use writer::{Append, Checkpoints, CommitObserver, Flush, Stats, TableWriter};
pub use writers::{Positions, Writers};

/// Which of a kind's tables: the clean rows, or the records that could not be cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableRole {
    Clean,
    DeadLetter,
}

impl TableRole {
    pub const ALL: [TableRole; 2] = [TableRole::Clean, TableRole::DeadLetter];

    /// The table's name: `pin` or `pin_dead_letter`.
    pub fn table_name(self, kind: Kind) -> String {
        match self {
            TableRole::Clean => kind.as_str().to_string(),
            TableRole::DeadLetter => format!("{kind}_dead_letter"),
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(self, kind: Kind) -> SchemaRef {
        match self {
            TableRole::Clean => schema(kind),
            TableRole::DeadLetter => dead_letter_schema(),
        }
    }
}

impl fmt::Display for TableRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableRole::Clean => "clean",
            TableRole::DeadLetter => "dead-letter",
        })
    }
}

/// Every table name, in a stable order: each kind's clean table, then its dead letters.
pub fn table_names() -> Vec<String> {
    Kind::ALL
        .iter()
        .flat_map(|k| TableRole::ALL.map(|r| r.table_name(*k)))
        .collect()
}

/// Rows per table name, as the summary lines of `run` and `batch` print them.
pub struct RowCounts<'a>(pub &'a std::collections::BTreeMap<String, u64>);

impl RowCounts<'_> {
    /// Rows of every dead-letter table together.
    pub fn dead_letters(&self) -> u64 {
        self.0
            .iter()
            .filter(|(t, _)| t.ends_with("_dead_letter"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The clean tables' counts: `geo=3 pin=4 user=3`.
    pub fn clean(&self) -> String {
        let rows: Vec<String> = self
            .0
            .iter()
            .filter(|(t, _)| !t.ends_with("_dead_letter"))
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        rows.join(" ")
    }
}

/// One value per table of a kind, by [`TableRole`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerTable<T> {
    pub clean: T,
    pub dead_letter: T,
}

impl<T> PerTable<T> {
    pub fn from_fn(mut f: impl FnMut(TableRole) -> T) -> Self {
        Self {
            clean: f(TableRole::Clean),
            dead_letter: f(TableRole::DeadLetter),
        }
    }

    pub fn get(&self, role: TableRole) -> &T {
        match role {
            TableRole::Clean => &self.clean,
            TableRole::DeadLetter => &self.dead_letter,
        }
    }

    pub fn get_mut(&mut self, role: TableRole) -> &mut T {
        match role {
            TableRole::Clean => &mut self.clean,
            TableRole::DeadLetter => &mut self.dead_letter,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (TableRole, &T)> {
        TableRole::ALL.into_iter().map(move |r| (r, self.get(r)))
    }

    pub fn map<U>(self, mut f: impl FnMut(TableRole, T) -> U) -> PerTable<U> {
        PerTable {
            clean: f(TableRole::Clean, self.clean),
            dead_letter: f(TableRole::DeadLetter, self.dead_letter),
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
        assert_eq!(
            table_names(),
            [
                "pin",
                "pin_dead_letter",
                "geo",
                "geo_dead_letter",
                "user",
                "user_dead_letter"
            ]
        );
        let p = PerTable::from_fn(|r| r == TableRole::DeadLetter);
        assert_eq!(p.iter().filter(|(_, v)| **v).count(), 1);
        assert!(*p.get(TableRole::DeadLetter));
        assert_eq!(
            p.map(|_, v| u8::from(v)),
            PerTable {
                clean: 0,
                dead_letter: 1
            }
        );
    }
}
