//! `pinpipe status --format table`: the status as aligned text, one section per question.

use std::fmt::Write as _;

use super::{End, SourceStatus, Status};

/// Columns padded to their widest cell; the first row is the header.
fn grid(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// `1.2 MB`, `830 kB`, `12 B`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.0} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// `42s`, `5m12s`, `3h04m`.
pub fn age(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=99 => format!("{s}s"),
        100..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn table(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tables under {}", s.location);
    let mut rows = vec![["table", "version", "last commit", "rows", "files", "bytes", "state"]
        .map(String::from)
        .to_vec()];
    for t in &s.tables {
        let state = match (&t.error, s.stale.contains(&t.name)) {
            (Some(e), _) => format!("{}: {e}", t.state),
            (None, true) => format!("STALE (no commit for over {}, records waiting)", age(s.stale_after_s)),
            (None, false) => t.state.to_string(),
        };
        rows.push(vec![
            t.name.clone(),
            opt(t.version),
            t.last_commit_age_s.map_or("?".into(), |a| format!("{} ago", age(a))),
            opt(t.rows),
            opt(t.files),
            t.bytes.map_or("?".into(), bytes),
            state,
        ]);
    }
    out.push_str(&grid(&rows));
    for e in &s.endpoints {
        let state = match &e.error {
            Some(err) => format!("unknown: {err}"),
            None => e.state.to_string(),
        };
        let _ = writeln!(out, "\n{} {}: {state}", e.source, e.target);
    }
    if !s.sources.is_empty() {
        out.push_str(&sources(&s.sources));
    }
    out.push_str(&dead_letters(s));
    out
}

fn sources(sources: &[SourceStatus]) -> String {
    let mut rows = vec![[
        "source",
        "stream",
        "partition",
        "stored (clean / dead letters)",
        "end",
        "lag",
        "lease",
        "note",
    ]
    .map(String::from)
    .to_vec()];
    for src in sources {
        let stored: Vec<String> = src.positions.values().map(|p| short(p.as_deref())).collect();
        let (end, lag) = match &src.end {
            End::Offset { high, .. } => (high.to_string(), opt(src.lag_records)),
            End::Probe {
                waiting,
                millis_behind_latest,
            } => (
                "(probe)".into(),
                match (waiting, millis_behind_latest) {
                    (false, _) => "0".into(),
                    (true, Some(ms)) => format!("waiting, {} behind", age(*ms as f64 / 1000.0)),
                    (true, None) => "waiting".into(),
                },
            ),
            End::Unknown => ("?".into(), "?".into()),
        };
        let lease = src.lease.as_ref().map_or(String::new(), |l| {
            let owner = l.owner.clone().unwrap_or_else(|| "free".into());
            let done = if l.finished { ", finished" } else { "" };
            format!(
                "{owner} ({}{done})",
                l.age_s.map_or("?".into(), |a| format!("{} ago", age(a)))
            )
        });
        rows.push(vec![
            src.source.to_string(),
            src.stream.clone(),
            src.partition.clone(),
            if stored.is_empty() {
                "-".into()
            } else {
                stored.join(" / ")
            },
            end,
            lag,
            lease,
            src.error.clone().unwrap_or_default(),
        ]);
    }
    format!("\n{}", grid(&rows))
}

/// A Kinesis sequence number is 56 digits: its tail is what differs between shards.
fn short(p: Option<&str>) -> String {
    match p {
        None => "none".into(),
        Some(p) if p.len() > 16 => format!("…{}", &p[p.len() - 12..]),
        Some(p) => p.to_string(),
    }
}

fn dead_letters(s: &Status) -> String {
    let mut out = format!("\ndead letters committed in the last {}", age(s.dead_letter_window_s));
    if s.dead_letters.is_empty() && s.dead_letter_errors.is_empty() {
        out.push_str(": none\n");
        return out;
    }
    out.push('\n');
    let mut rows = vec![vec!["table".to_string(), "reason".into(), "count".into()]];
    for d in &s.dead_letters {
        rows.push(vec![d.table.clone(), d.reason.clone(), d.count.to_string()]);
    }
    out.push_str(&grid(&rows));
    for e in &s.dead_letter_errors {
        let _ = writeln!(out, "  unknown: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_short() {
        assert_eq!(age(42.4), "42s");
        assert_eq!(age(312.0), "5m12s");
        assert_eq!(age(11_040.0), "3h04m");
        assert_eq!(age(3600.0), "1h00m");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(
            short(Some("49590338271490256608559692538361571095921575989136588898")),
            "…989136588898"
        );
        assert_eq!(short(Some("42")), "42");
        assert_eq!(short(None), "none");
    }
}
