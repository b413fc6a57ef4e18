//! Arrow schemas of the clean and dead-letter tables, and builders that append rows to
//! column builders directly (no intermediate row structs are kept).

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BinaryBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::{Kind, Row};

/// Where a row came from. Constant for a chunk of records from one source partition.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// `kafka`, `kinesis` or `batch`.
    pub source: &'a str,
    pub stream: &'a str,
    pub partition: &'a str,
    /// Microseconds since the epoch, UTC.
    pub ingested_at: i64,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The list item field as Delta names it, so batches match the table schema exactly.
fn coord_item() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Float64, true))
}

fn lineage_fields() -> Vec<Field> {
    vec![
        Field::new("_source", DataType::Utf8, false),
        Field::new("_stream", DataType::Utf8, false),
        Field::new("_partition", DataType::Utf8, false),
        Field::new("_position", DataType::Utf8, false),
        Field::new("_ingested_at", ts(), false),
    ]
}

static SCHEMAS: LazyLock<[SchemaRef; 3]> = LazyLock::new(|| {
    let s = |mut data: Vec<Field>| {
        data.extend(lineage_fields());
        Arc::new(Schema::new(data))
    };
    use DataType::{Int32, Int64, Utf8};
    [
        s(vec![
            Field::new("ind", Int64, false),
            Field::new("unique_id", Utf8, true),
            Field::new("title", Utf8, true),
            Field::new("description", Utf8, true),
            Field::new("follower_count", Int64, true),
            Field::new("poster_name", Utf8, true),
            Field::new("tag_list", Utf8, true),
            Field::new("is_image_or_video", Utf8, true),
            Field::new("image_src", Utf8, true),
            Field::new("save_location", Utf8, true),
            Field::new("category", Utf8, true),
            Field::new("downloaded", Int32, true),
        ]),
        s(vec![
            Field::new("ind", Int64, false),
            Field::new("country", Utf8, true),
            Field::new("coordinates", DataType::List(coord_item()), true),
            Field::new("timestamp", ts(), true),
        ]),
        s(vec![
            Field::new("ind", Int64, false),
            Field::new("user_name", Utf8, true),
            Field::new("age", Int32, true),
            Field::new("date_joined", ts(), true),
        ]),
    ]
});

static DEAD_LETTER: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = lineage_fields();
    f.push(Field::new("error", DataType::Utf8, false));
    f.push(Field::new("raw", DataType::Binary, false));
    Arc::new(Schema::new(f))
});

/// The raw tables' partition column: the UTC date of `_ingested_at`, so retention is a
/// metadata-only delete of old partitions.
pub const RAW_PARTITION: &str = "ingest_date";

static RAW: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new("raw", DataType::Binary, false),
        Field::new("source_key", DataType::Binary, true),
        Field::new("source_timestamp", ts(), true),
    ];
    f.extend(lineage_fields());
    f.push(Field::new(RAW_PARTITION, DataType::Date32, false));
    Arc::new(Schema::new(f))
});

/// Schema of every `<kind>_raw` table: the bytes as received, the source's key and
/// timestamp where it has them, the lineage, and the ingest date.
pub fn raw_schema() -> SchemaRef {
    RAW.clone()
}

/// Schema of the clean table of `kind`: data columns in the contract's order, then lineage.
pub fn schema(kind: Kind) -> SchemaRef {
    SCHEMAS[kind as usize].clone()
}

/// Schema of every `<kind>_dead_letter` table.
pub fn dead_letter_schema() -> SchemaRef {
    DEAD_LETTER.clone()
}

#[derive(Default)]
struct LineageBuilder {
    source: StringBuilder,
    stream: StringBuilder,
    partition: StringBuilder,
    position: StringBuilder,
    ingested_at: TimestampMicrosecondBuilder,
}

impl LineageBuilder {
    fn append(&mut self, l: &Lineage<'_>, position: &str) {
        self.source.append_value(l.source);
        self.stream.append_value(l.stream);
        self.partition.append_value(l.partition);
        self.position.append_value(position);
        self.ingested_at.append_value(l.ingested_at);
    }

    fn finish(&mut self, cols: &mut Vec<ArrayRef>) {
        cols.push(Arc::new(self.source.finish()));
        cols.push(Arc::new(self.stream.finish()));
        cols.push(Arc::new(self.partition.finish()));
        cols.push(Arc::new(self.position.finish()));
        cols.push(Arc::new(self.ingested_at.finish().with_timezone("UTC")));
    }
}

#[derive(Default)]
struct PinCols {
    ind: Int64Builder,
    unique_id: StringBuilder,
    title: StringBuilder,
    description: StringBuilder,
    follower_count: Int64Builder,
    poster_name: StringBuilder,
    tag_list: StringBuilder,
    is_image_or_video: StringBuilder,
    image_src: StringBuilder,
    save_location: StringBuilder,
    category: StringBuilder,
    downloaded: Int32Builder,
}

#[derive(Default)]
struct GeoCols {
    ind: Int64Builder,
    country: StringBuilder,
    coordinates: Option<ListBuilder<Float64Builder>>,
    timestamp: TimestampMicrosecondBuilder,
}

#[derive(Default)]
struct UserCols {
    ind: Int64Builder,
    user_name: StringBuilder,
    age: Int32Builder,
    date_joined: TimestampMicrosecondBuilder,
}

enum Cols {
    Pin(Box<PinCols>),
    Geo(Box<GeoCols>),
    User(Box<UserCols>),
}

/// Accumulates clean rows of one kind into a [`RecordBatch`] of [`schema`]`(kind)`.
pub struct CleanBatchBuilder {
    kind: Kind,
    cols: Cols,
    lineage: LineageBuilder,
    rows: usize,
}

impl CleanBatchBuilder {
    pub fn new(kind: Kind) -> Self {
        let cols = match kind {
            Kind::Pin => Cols::Pin(Box::default()),
            Kind::Geo => Cols::Geo(Box::new(GeoCols {
                coordinates: Some(ListBuilder::new(Float64Builder::new()).with_field(coord_item())),
                ..Default::default()
            })),
            Kind::User => Cols::User(Box::default()),
        };
        Self {
            kind,
            cols,
            lineage: LineageBuilder::default(),
            rows: 0,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends a row. A row of another kind is a caller bug and is refused.
    pub fn append(&mut self, row: &Row<'_>, lineage: &Lineage<'_>, position: &str) -> bool {
        match (&mut self.cols, row) {
            (Cols::Pin(c), Row::Pin(r)) => {
                c.ind.append_value(r.ind);
                c.unique_id.append_option(r.unique_id.as_deref());
                c.title.append_option(r.title.as_deref());
                c.description.append_option(r.description.as_deref());
                c.follower_count.append_option(r.follower_count);
                c.poster_name.append_option(r.poster_name.as_deref());
                c.tag_list.append_option(r.tag_list.as_deref());
                c.is_image_or_video.append_option(r.is_image_or_video.as_deref());
                c.image_src.append_option(r.image_src.as_deref());
                c.save_location.append_option(r.save_location.as_deref());
                c.category.append_option(r.category.as_deref());
                c.downloaded.append_option(r.downloaded);
            }
            (Cols::Geo(c), Row::Geo(r)) => {
                c.ind.append_value(r.ind);
                c.country.append_option(r.country.as_deref());
                let list = c
                    .coordinates
                    .get_or_insert_with(|| ListBuilder::new(Float64Builder::new()));
                match r.coordinates {
                    Some([lat, lon]) => {
                        list.values().append_value(lat);
                        list.values().append_value(lon);
                        list.append(true);
                    }
                    None => list.append(false),
                }
                c.timestamp.append_option(r.timestamp);
            }
            (Cols::User(c), Row::User(r)) => {
                c.ind.append_value(r.ind);
                c.user_name.append_option(r.user_name.as_deref());
                c.age.append_option(r.age);
                c.date_joined.append_option(r.date_joined);
            }
            _ => return false,
        }
        self.lineage.append(lineage, position);
        self.rows += 1;
        true
    }

    /// Takes the rows appended so far as one batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(20);
        match &mut self.cols {
            Cols::Pin(c) => {
                cols.push(Arc::new(c.ind.finish()));
                cols.push(Arc::new(c.unique_id.finish()));
                cols.push(Arc::new(c.title.finish()));
                cols.push(Arc::new(c.description.finish()));
                cols.push(Arc::new(c.follower_count.finish()));
                cols.push(Arc::new(c.poster_name.finish()));
                cols.push(Arc::new(c.tag_list.finish()));
                cols.push(Arc::new(c.is_image_or_video.finish()));
                cols.push(Arc::new(c.image_src.finish()));
                cols.push(Arc::new(c.save_location.finish()));
                cols.push(Arc::new(c.category.finish()));
                cols.push(Arc::new(c.downloaded.finish()));
            }
            Cols::Geo(c) => {
                cols.push(Arc::new(c.ind.finish()));
                cols.push(Arc::new(c.country.finish()));
                let list = c
                    .coordinates
                    .get_or_insert_with(|| ListBuilder::new(Float64Builder::new()));
                cols.push(Arc::new(list.finish()));
                cols.push(Arc::new(c.timestamp.finish().with_timezone("UTC")));
            }
            Cols::User(c) => {
                cols.push(Arc::new(c.ind.finish()));
                cols.push(Arc::new(c.user_name.finish()));
                cols.push(Arc::new(c.age.finish()));
                cols.push(Arc::new(c.date_joined.finish().with_timezone("UTC")));
            }
        }
        self.lineage.finish(&mut cols);
        self.rows = 0;
        // The builders were made for this schema: a failure here is a programming error in
        // this file, caught by the unit tests.
        RecordBatch::try_new(schema(self.kind), cols).expect("clean batch matches its schema")
    }
}

/// Accumulates dead-letter rows into a [`RecordBatch`] of [`dead_letter_schema`].
#[derive(Default)]
pub struct DeadLetterBatchBuilder {
    lineage: LineageBuilder,
    error: StringBuilder,
    raw: BinaryBuilder,
    rows: usize,
}

impl DeadLetterBatchBuilder {
    pub fn append(&mut self, lineage: &Lineage<'_>, position: &str, error: &str, raw: &[u8]) {
        self.lineage.append(lineage, position);
        self.error.append_value(error);
        self.raw.append_value(raw);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(7);
        self.lineage.finish(&mut cols);
        cols.push(Arc::new(self.error.finish()));
        cols.push(Arc::new(self.raw.finish()));
        self.rows = 0;
        RecordBatch::try_new(dead_letter_schema(), cols).expect("dead-letter batch matches its schema")
    }
}

/// What a source knows of a record besides its bytes (the raw table keeps it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordMeta<'a> {
    /// The Kafka message key, the Kinesis partition key.
    pub key: Option<&'a [u8]>,
    /// The Kafka message timestamp, the Kinesis arrival time (microseconds, UTC).
    pub timestamp_us: Option<i64>,
}

/// Microseconds in a day: `_ingested_at` to `ingest_date`.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Accumulates raw rows into a [`RecordBatch`] of [`raw_schema`].
#[derive(Default)]
pub struct RawBatchBuilder {
    raw: BinaryBuilder,
    key: BinaryBuilder,
    timestamp: TimestampMicrosecondBuilder,
    lineage: LineageBuilder,
    date: Date32Builder,
    rows: usize,
}

impl RawBatchBuilder {
    pub fn append(&mut self, lineage: &Lineage<'_>, position: &str, raw: &[u8], meta: RecordMeta<'_>) {
        self.raw.append_value(raw);
        self.key.append_option(meta.key);
        self.timestamp.append_option(meta.timestamp_us);
        self.lineage.append(lineage, position);
        self.date
            .append_value(lineage.ingested_at.div_euclid(MICROS_PER_DAY) as i32);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.raw.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
        ];
        self.lineage.finish(&mut cols);
        cols.push(Arc::new(self.date.finish()));
        self.rows = 0;
        RecordBatch::try_new(raw_schema(), cols).expect("raw batch matches its schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::{clean, DEFAULT_MAX_RECORD_BYTES};

    #[test]
    fn builders_match_schemas() {
        let l = Lineage {
            source: "batch",
            stream: "s",
            partition: "p",
            ingested_at: 0,
        };
        let samples: [(Kind, &[u8]); 3] = [
            (Kind::Pin, br#"{"index":1,"follower_count":"2k"}"#),
            (Kind::Geo, br#"{"ind":1,"latitude":1,"longitude":2}"#),
            (Kind::User, br#"{"ind":1,"age":3}"#),
        ];
        for (kind, raw) in samples {
            let mut b = CleanBatchBuilder::new(kind);
            let row = clean(kind, raw, DEFAULT_MAX_RECORD_BYTES).unwrap();
            assert!(b.append(&row, &l, "1"));
            assert!(b.append(&row, &l, "2"));
            let batch = b.finish();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(batch.schema(), schema(kind));
            assert!(b.is_empty());
        }
        let mut d = DeadLetterBatchBuilder::default();
        d.append(&l, "3", "invalid json", b"{");
        assert_eq!(d.finish().num_rows(), 1);
        let mut r = RawBatchBuilder::default();
        let day = Lineage {
            ingested_at: 1_764_547_200_000_000 + 3_600_000_000, // 2025-12-01T01:00Z
            ..l
        };
        r.append(&day, "4", b"{", RecordMeta::default());
        let meta = RecordMeta {
            key: Some(b"k"),
            timestamp_us: Some(7),
        };
        r.append(&day, "5", b"x", meta);
        let batch = r.finish();
        assert_eq!(batch.schema(), raw_schema());
        let dates = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Date32Type>(
            batch.column_by_name(RAW_PARTITION).unwrap(),
        );
        assert_eq!(dates.value(0), 20423, "days since 1970 of 2025-12-01");
    }
}
