//! Shared by the bench binaries: pinpipe's cleaner over records held in memory.

use pinpipe::clean::{self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage};

/// Cleans every record into Arrow batches of 8 192 rows on this thread, as a partition
/// actor does; returns (clean rows, dead letters).
pub fn clean_all(records: &[(Kind, Vec<u8>)]) -> (usize, usize) {
    let lineage = Lineage {
        source: "batch",
        stream: "bench",
        partition: "0",
        ingested_at: 0,
    };
    let mut builders = Kind::ALL.map(CleanBatchBuilder::new);
    let mut dead = DeadLetterBatchBuilder::default();
    let mut pos = itoa::Buffer::new();
    let mut rows = 0usize;
    for (i, (k, r)) in records.iter().enumerate() {
        let p = pos.format(i);
        match clean::clean(*k, r, clean::DEFAULT_MAX_RECORD_BYTES) {
            Ok(row) => {
                let b = &mut builders[*k as usize];
                b.append(&row, &lineage, p);
                if b.len() == 8192 {
                    rows += b.finish().num_rows();
                }
            }
            Err(e) => dead.append(&lineage, p, &e.to_string(), r),
        }
    }
    for b in &mut builders {
        rows += b.finish().num_rows();
    }
    (rows, dead.finish().num_rows())
}
