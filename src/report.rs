//! `pinpipe report`: the old batch notebook's eight questions over the clean tables, as
//! SQL run by DataFusion on the Delta tables (local folders or S3).
//!
//! The rules come from the spec (`Analytics` in cleaning.md): inner joins on `ind` that
//! keep every row (the streams repeat posts), rows whose grouping, ranking or measured
//! column is null left out of that question, ties to the lexicographically smallest
//! value, and the lower median (the value at 1-based position ceil(n/2)). Questions 1–3
//! join pin with geo; 4, 5, 7 and 8 join pin with user; question 6 reads the user table
//! alone and counts its rows per year the user joined.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;

use crate::sink::table::TableError;
use crate::sink::TablesConfig;

/// Errors of a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("table {0} does not exist under {1}: run `pinpipe run` or `pinpipe batch` first")]
    Missing(String, String),
    #[error("{question}: {source}")]
    Query {
        question: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("--question {0}: allowed 1..=8")]
    NoSuchQuestion(u8),
}

/// One question: its output name (`q3a`), number and SQL.
pub struct Question {
    pub name: &'static str,
    pub number: u8,
    pub title: &'static str,
    pub sql: &'static str,
}

/// pin ⋈ geo, with the year of the post.
macro_rules! pin_geo {
    () => {
        "pg AS (SELECT p.category, p.poster_name, p.follower_count, g.country, \
         CAST(date_part('year', g.\"timestamp\") AS BIGINT) AS post_year \
         FROM pin p JOIN geo g ON p.ind = g.ind)"
    };
}

/// pin ⋈ user, with the age group and the year the user joined.
macro_rules! pin_user {
    () => {
        "pu AS (SELECT p.category, p.follower_count, \
         CASE WHEN u.age BETWEEN 18 AND 24 THEN '18-24' WHEN u.age BETWEEN 25 AND 35 THEN '25-35' \
         WHEN u.age BETWEEN 36 AND 50 THEN '36-50' WHEN u.age > 50 THEN '+50' END AS age_group, \
         CAST(date_part('year', u.date_joined) AS BIGINT) AS post_year \
         FROM pin p JOIN \"user\" u ON p.ind = u.ind)"
    };
}

/// The most frequent category per `$group` of `$from` (ties: smallest category).
macro_rules! top_category {
    ($with:expr, $from:literal, $group:literal, $filter:literal) => {
        concat!(
            "WITH ",
            $with,
            ", c AS (SELECT ",
            $group,
            ", category, COUNT(*) AS category_count FROM ",
            $from,
            " WHERE ",
            $group,
            " IS NOT NULL AND category IS NOT NULL",
            $filter,
            " GROUP BY ",
            $group,
            ", category) SELECT ",
            $group,
            ", category, category_count FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY ",
            $group,
            " ORDER BY category_count DESC, category ASC) AS rn FROM c) WHERE rn = 1 ORDER BY ",
            $group
        )
    };
}

/// The lower median of follower_count per `$group` of pin ⋈ user. The join repeats rows
/// (every pair of repeated records), so values are counted first and the median is the
/// first value whose running count reaches ceil(n/2): a sort of the distinct values, not
/// of the whole join.
macro_rules! median {
    ($group:literal, $filter:literal) => {
        concat!(
            "WITH ",
            pin_user!(),
            ", v AS (SELECT ",
            $group,
            ", follower_count, COUNT(*) AS c FROM pu WHERE follower_count IS NOT NULL",
            $filter,
            " GROUP BY ",
            $group,
            ", follower_count), w AS (SELECT ",
            $group,
            ", follower_count, SUM(c) OVER (PARTITION BY ",
            $group,
            " ORDER BY follower_count ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum, \
             SUM(c) OVER (PARTITION BY ",
            $group,
            ") AS n FROM v), m AS (SELECT ",
            $group,
            ", follower_count, ROW_NUMBER() OVER (PARTITION BY ",
            $group,
            " ORDER BY follower_count) AS k FROM w WHERE cum >= (n + 1) / 2) SELECT ",
            $group,
            ", follower_count AS median_follower_count FROM m WHERE k = 1 ORDER BY ",
            $group
        )
    };
}

/// Each country's top user by followers (ties: smallest name), as CTE `t`.
macro_rules! top_user {
    () => {
        concat!(
            "WITH ",
            pin_geo!(),
            // Each (country, name)'s best first: the ranking then sorts those, not the join.
            ", b AS (SELECT country, poster_name, MAX(follower_count) AS follower_count FROM pg \
             WHERE country IS NOT NULL AND poster_name IS NOT NULL AND follower_count IS NOT NULL \
             GROUP BY country, poster_name), t AS (SELECT country, poster_name, follower_count FROM \
             (SELECT *, ROW_NUMBER() OVER (PARTITION BY country ORDER BY follower_count DESC, \
             poster_name ASC) AS rn FROM b) WHERE rn = 1)"
        )
    };
}

/// The questions, in order.
pub const QUESTIONS: &[Question] = &[
    Question {
        name: "q1",
        number: 1,
        title: "Most popular category per country",
        sql: top_category!(pin_geo!(), "pg", "country", ""),
    },
    Question {
        name: "q2",
        number: 2,
        title: "Most popular category per year, 2018-2022",
        sql: top_category!(pin_geo!(), "pg", "post_year", " AND post_year BETWEEN 2018 AND 2022"),
    },
    Question {
        name: "q3a",
        number: 3,
        title: "User with the most followers per country",
        sql: concat!(top_user!(), " SELECT * FROM t ORDER BY country"),
    },
    Question {
        name: "q3b",
        number: 3,
        title: "Country whose top user has the most followers",
        sql: concat!(
            top_user!(),
            " SELECT country, follower_count FROM t ORDER BY follower_count DESC, country ASC LIMIT 1"
        ),
    },
    Question {
        name: "q4",
        number: 4,
        title: "Most popular category per age group",
        sql: top_category!(pin_user!(), "pu", "age_group", ""),
    },
    Question {
        name: "q5",
        number: 5,
        title: "Median follower count per age group",
        sql: median!("age_group", " AND age_group IS NOT NULL"),
    },
    Question {
        name: "q6",
        number: 6,
        title: "Users joined per year, 2015-2020",
        // The user table alone: each user row counts once, whether or not it has pins.
        sql: "WITH u AS (SELECT CAST(date_part('year', date_joined) AS BIGINT) AS post_year FROM \"user\") \
              SELECT post_year, COUNT(*) AS number_users_joined FROM u \
              WHERE post_year BETWEEN 2015 AND 2020 GROUP BY post_year ORDER BY post_year",
    },
    Question {
        name: "q7",
        number: 7,
        title: "Median follower count by joining year, 2015-2020",
        sql: median!("post_year", " AND post_year BETWEEN 2015 AND 2020"),
    },
    Question {
        name: "q8",
        number: 8,
        title: "Median follower count by age group and joining year, 2015-2020",
        sql: median!(
            "age_group, post_year",
            " AND age_group IS NOT NULL AND post_year BETWEEN 2015 AND 2020"
        ),
    },
];

/// The questions `--question` selects (all when `None`).
pub fn select(number: Option<u8>) -> Result<Vec<&'static Question>, ReportError> {
    match number {
        None => Ok(QUESTIONS.iter().collect()),
        Some(n) if (1..=8).contains(&n) => Ok(QUESTIONS.iter().filter(|q| q.number == n).collect()),
        Some(n) => Err(ReportError::NoSuchQuestion(n)),
    }
}

/// Memory the queries may hold before sorts and aggregations spill to disk. The joins keep
/// every repeated row (spec), so they grow with the square of a post's repeats: over the
/// emulator's 1M posts (11k distinct `ind`) pin JOIN geo has about 90M rows.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// A DataFusion session with the clean tables `pin`, `geo` and `user` registered, its
/// memory bounded by `memory_limit` bytes (spilling to the temp folder beyond).
pub async fn session(tables: &TablesConfig, memory_limit: usize) -> Result<SessionContext, ReportError> {
    use deltalake::datafusion::execution::memory_pool::FairSpillPool;
    use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use deltalake::datafusion::prelude::SessionConfig;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        .build_arc()
        .map_err(|source| ReportError::Query {
            question: "starting the query engine",
            source,
        })?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    for name in ["pin", "geo", "user"] {
        let table = tables
            .open_existing(name)
            .await?
            .ok_or_else(|| ReportError::Missing(name.into(), tables.location.clone()))?;
        let query = |source| ReportError::Query {
            question: "opening the tables",
            source,
        };
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| query(e.into()))?;
        let provider = table.table_provider().await.map_err(query)?;
        ctx.register_table(name, provider).map_err(query)?;
    }
    Ok(ctx)
}

/// Runs one question.
pub async fn answer(ctx: &SessionContext, q: &Question) -> Result<Vec<RecordBatch>, ReportError> {
    let err = |source| ReportError::Query {
        question: q.name,
        source,
    };
    ctx.sql(q.sql).await.map_err(err)?.collect().await.map_err(err)
}

/// Output format of `pinpipe report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables on the terminal.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// An array of objects keyed by column name.
    Json,
}

/// Renders `batches` in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    use deltalake::arrow::{csv, json, util::pretty};
    Ok(match format {
        Format::Table => format!("{}\n", pretty::pretty_format_batches(batches)?).into_bytes(),
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().with_header(true).build(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.into_inner()
        }
        Format::Json => {
            let mut w = json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            let mut out = w.into_inner();
            // An empty answer is an empty array, not an empty file.
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
            out
        }
    })
}

/// Answers `questions`; prints them, or writes `<out>/<name>.<ext>` when `out` is given.
/// Returns the rows of each answer.
pub async fn run(
    tables: &TablesConfig,
    questions: &[&Question],
    format: Format,
    out: Option<&Path>,
    memory_limit: usize,
) -> Result<Vec<(&'static str, usize)>, ReportError> {
    let ctx = session(tables, memory_limit).await?;
    let mut done = Vec::new();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::Write {
            path: dir.to_path_buf(),
            source: Box::new(e),
        })?;
    }
    for q in questions {
        let batches = answer(&ctx, q).await?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let ext = match format {
            Format::Table => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
        };
        let path = out.map(|d| d.join(format!("{}.{ext}", q.name)));
        let bytes = render(&batches, format).map_err(|source| ReportError::Write {
            path: path.clone().unwrap_or_else(|| "stdout".into()),
            source,
        })?;
        match &path {
            Some(p) => std::fs::write(p, bytes).map_err(|e| ReportError::Write {
                path: p.clone(),
                source: Box::new(e),
            })?,
            None => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let r = if format == Format::Table {
                    writeln!(stdout, "{} ({}): {}", q.title, q.name, rows).and_then(|_| stdout.write_all(&bytes))
                } else {
                    stdout.write_all(&bytes)
                };
                r.map_err(|e| ReportError::Write {
                    path: "stdout".into(),
                    source: Box::new(e),
                })?;
            }
        }
        done.push((q.name, rows));
    }
    Ok(done)
}
