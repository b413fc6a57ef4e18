#!/usr/bin/env python3
"""Baseline: the seed's engine. A PySpark job (local mode) applying the same cleaning as
the old Databricks notebooks, made exact by the contract (`shared/spec/cleaning.md`), to
the raw JSON files, writing Parquet (clean rows and dead letters per kind).

    spark_clean.py --input DIR --out OUT [--master local[2]]
    spark_clean.py --fixtures

Built the way a Spark engineer would, with native expressions only (no Python UDF, which
would be far slower): each file is read whole and split into lines (so a row knows its
line number, as pinpipe's lineage does), each line is parsed once into a VARIANT
(`try_parse_json`), and every field is typed with `schema_of_variant` and coerced with
`try_variant_get`; the first failing rule names the record's dead-letter reason.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

I64 = (-(2**63), 2**63 - 1)
I32 = (-(2**31), 2**31 - 1)
NUMBER = r"^[+-]?[0-9][0-9.eE+-]*$"
TS = r"^\d{4}-\d{2}-\d{2}[ Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}(:?\d{2})?)?$"


def session(master):
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName("pinpipe-baseline")
        .config("spark.sql.session.timeZone", "UTC")
        # The contract: a repeated key is not an error, the last value wins.
        .config("spark.sql.variant.allowDuplicateKeys", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", os.environ.get("PINPIPE_SPARK_MEMORY", "2g"))
        .getOrCreate()
    )


def cleaner():
    """(parse, per-kind column builders), with pyspark imported lazily."""
    from pyspark.sql import functions as F

    def typ(v, f):
        # 'STRING', 'BIGINT', 'DECIMAL(p,s)', 'DOUBLE', 'BOOLEAN', 'OBJECT<..>', 'ARRAY<..>',
        # 'VOID' (JSON null); SQL NULL when the field is absent.
        return F.schema_of_variant(F.try_variant_get(v, f"$.{f}", "variant"))

    def absent(t):
        return t.isNull() | (t == "VOID")

    def numeric(t):
        return t.isin("BIGINT", "DOUBLE") | t.startswith("DECIMAL")

    def string(v, f):
        return F.try_variant_get(v, f"$.{f}", "string")

    def to_int(v, f, lo, hi):
        t = typ(v, f)
        s = F.trim(string(v, f))
        d = F.when(numeric(t), F.try_variant_get(v, f"$.{f}", "double")).when(
            (t == "STRING") & s.rlike(NUMBER), s.try_cast("double")
        )
        big = F.when(t == "BIGINT", F.try_variant_get(v, f"$.{f}", "decimal(38,0)")).when(
            (t == "STRING") & s.rlike(r"^[+-]?[0-9]{1,38}$"), s.try_cast("decimal(38,0)")
        )
        whole = big.isNotNull() | (d.isNotNull() & (d == F.round(d, 0)) & ~F.isnan(d))
        inrange = F.when(big.isNotNull(), big.between(lo, hi)).otherwise(
            d.between(float(lo), float(hi)) & (d < 9.223372036854775807e18)
        )
        err = (
            F.when(absent(t) | ((t == "STRING") & (s == "")), F.lit(None))
            .when((t == "STRING") & s.rlike(r"^[+-]?[0-9]+$") & big.isNull(), F.lit(f"{f}: out of range"))
            .when(~whole, F.lit(f"{f}: not an integer"))
            .when(~inrange, F.lit(f"{f}: out of range"))
        )
        val = F.when(err.isNull() & ~absent(t), F.coalesce(big, d.try_cast("decimal(38,0)")).try_cast("bigint"))
        return val, err

    def key(v, f):
        val, err = to_int(v, f, *I64)
        return val, F.coalesce(err, F.when(val.isNull(), F.lit(f"{f}: missing")))

    def to_str(v, f):
        t = typ(v, f)
        s = string(v, f)
        err = F.when(~absent(t) & ~(numeric(t) | (t == "STRING")), F.lit(f"{f}: not a string"))
        val = F.when(err.isNull() & (F.trim(s) != ""), s)
        return val, err

    def to_float(v, f):
        t = typ(v, f)
        s = F.trim(string(v, f))
        d = F.when(numeric(t), F.try_variant_get(v, f"$.{f}", "double")).when(
            (t == "STRING") & s.rlike(NUMBER), s.try_cast("double")
        )
        err = F.when(absent(t) | ((t == "STRING") & (s == "")), F.lit(None)).when(
            d.isNull() | F.isnan(d) | (F.abs(d) == float("inf")), F.lit(f"{f}: not a number")
        )
        return F.when(err.isNull(), d), err

    def to_ts(v, f):
        t = typ(v, f)
        s = F.trim(string(v, f))
        norm = F.upper(s)  # `t`/`z` accepted like `T`/`Z`
        ts = F.when(norm.rlike(TS), norm.try_cast("timestamp"))
        err = F.when(absent(t) | ((t == "STRING") & (s == "")), F.lit(None)).when(
            (t != "STRING") | ts.isNull(), F.lit(f"{f}: not a timestamp")
        )
        return F.when(err.isNull(), ts), err

    def null_if(col, *values):
        return F.when(~col.isin(*values), col)

    def wrong_kind(v, kind, fields):
        # Rule 8: none of the kind's other fields present (a JSON null counts as present).
        present = [typ(v, f).isNotNull() for f in fields]
        anything = present[0]
        for p in present[1:]:
            anything = anything | p
        return F.when(~anything, F.lit(f"wrong kind: no {kind} fields"))

    def pin(v):
        ind, e0 = key(v, "index")
        fc_s, e1 = to_str(v, "follower_count")
        fc_s = null_if(F.trim(fc_s), "User Info Error")
        m = F.regexp_extract(fc_s, r"^([0-9]+(\.[0-9]+)?)([kM]?)$", 1)
        mult = F.when(fc_s.endswith("k"), 1000).when(fc_s.endswith("M"), 1000000).otherwise(1)
        num = F.when(m != "", F.try_multiply(m.try_cast("decimal(38,6)"), F.lit(mult).cast("decimal(38,0)")))
        e1 = F.coalesce(
            e1,
            F.when(fc_s.isNotNull() & (m == ""), F.lit("follower_count: not a count"))
            .when(fc_s.isNotNull() & (num.isNull() | (num > I64[1])), F.lit("follower_count: out of range"))
            .when(fc_s.isNotNull() & (num != F.floor(num)), F.lit("follower_count: not a count")),
        )
        ek = wrong_kind(v, "pin", ("unique_id", "title", "description", "poster_name", "follower_count", "tag_list",
                                    "is_image_or_video", "image_src", "downloaded", "save_location", "category"))
        cols, errs = {"ind": ind}, [e0, ek, e1]
        for f in ("unique_id", "title", "description", "poster_name", "tag_list", "is_image_or_video", "image_src", "save_location", "category"):
            cols[f], e = to_str(v, f)
            errs.append(e)
        dl, e = to_int(v, "downloaded", *I32)
        errs.append(e)
        save = F.regexp_replace(cols["save_location"], r"^Local save in ", "")
        out = [
            ind.alias("ind"),
            cols["unique_id"].alias("unique_id"),
            null_if(cols["title"], "No Title Data Available").alias("title"),
            null_if(cols["description"], "No description available", "No description available Story format", "Untitled").alias("description"),
            num.try_cast("bigint").alias("follower_count"),
            null_if(cols["poster_name"], "User Info Error").alias("poster_name"),
            null_if(cols["tag_list"], "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e").alias("tag_list"),
            cols["is_image_or_video"].alias("is_image_or_video"),
            null_if(cols["image_src"], "Image src error.").alias("image_src"),
            F.when(F.trim(save) != "", save).alias("save_location"),
            cols["category"].alias("category"),
            dl.try_cast("int").alias("downloaded"),
        ]
        return out, errs

    def geo(v):
        ind, e0 = key(v, "ind")
        lat, e1 = to_float(v, "latitude")
        lon, e2 = to_float(v, "longitude")
        e3 = F.when(lat.isNotNull() & ~lat.between(-90.0, 90.0), F.lit("latitude: out of range"))
        e4 = F.when(lon.isNotNull() & ~lon.between(-180.0, 180.0), F.lit("longitude: out of range"))
        country, e5 = to_str(v, "country")
        ts, e6 = to_ts(v, "timestamp")
        coords = F.when(lat.isNotNull() & lon.isNotNull(), F.array(lat, lon))
        out = [ind.alias("ind"), country.alias("country"), coords.alias("coordinates"), ts.alias("timestamp")]
        ek = wrong_kind(v, "geo", ("timestamp", "latitude", "longitude", "country"))
        return out, [e0, ek, e1, e2, e3, e4, e5, e6]

    def user(v):
        ind, e0 = key(v, "ind")
        first, e1 = to_str(v, "first_name")
        last, e2 = to_str(v, "last_name")
        age, e3 = to_int(v, "age", *I32)
        joined, e4 = to_ts(v, "date_joined")
        name = F.when(first.isNotNull() | last.isNotNull(), F.concat_ws(" ", first, last))
        out = [ind.alias("ind"), name.alias("user_name"), age.try_cast("int").alias("age"), joined.alias("date_joined")]
        ek = wrong_kind(v, "user", ("first_name", "last_name", "age", "date_joined"))
        return out, [e0, ek, e1, e2, e3, e4]

    def parse(line):
        """(variant, whole-record error)."""
        # try_parse_json stops after the first value and ignores what follows (`{..}}` would
        # pass), and Jackson skips a byte-order mark; the contract calls both invalid JSON.
        # Parsing the line inside `[...]` makes any trailing text, or a BOM, a syntax error;
        # a second element means two values were sent.
        w = F.try_parse_json(F.concat(F.lit("["), line, F.lit("]")))
        v = F.try_variant_get(w, "$[0]", "variant")
        t = F.schema_of_variant(v)
        err = F.when(
            w.isNull() | v.isNull() | F.try_variant_get(w, "$[1]", "variant").isNotNull(), F.lit("invalid json")
        ).when(~t.startswith("OBJECT"), F.lit("not a json object"))
        return v, err

    return parse, {"pin": pin, "geo": geo, "user": user}


def clean_frame(df, kind):
    """df has `line` (+ lineage); returns (clean rows, dead letters)."""
    from pyspark.sql import functions as F

    parse, kinds = cleaner()
    v, whole = parse(F.col("line"))
    out, errs = kinds[kind](F.col("v"))
    lineage = [c for c in df.columns if c.startswith("_")]
    staged = df.select("line", *lineage, v.alias("v"), whole.alias("whole"))
    staged = staged.select("*", *out, F.coalesce(F.col("whole"), *errs).alias("error"))
    data = [c._jc.toString().split(" AS ")[-1].strip("`") for c in out]
    clean = staged.where(F.col("error").isNull()).select(*data, *lineage)
    dead = staged.where(F.col("error").isNotNull()).select(*lineage, "error", F.encode("line", "UTF-8").alias("raw"))
    return clean, dead, data, staged


def run(spark, input_dir, out_dir):
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    files = common.list_inputs(input_dir)
    for kind in common.KINDS:
        paths = [p for k, _t, _r, p in files if k == kind]
        if not paths:
            continue
        # One row per file, split into lines: the line number is the record's position.
        df = spark.read.text(paths, wholetext=True).select(
            F.input_file_name().alias("_partition"), F.posexplode(F.split("value", "\n")).alias("pos", "line")
        )
        df = df.where(F.col("line") != "").select(
            F.lit("batch").alias("_source"),
            F.regexp_extract("_partition", r"topics/([^/]+)/", 1).alias("_stream"),
            "_partition",
            (F.col("pos") + 1).cast("string").alias("_position"),
            F.current_timestamp().alias("_ingested_at"),
            F.regexp_replace("line", "\r$", "").alias("line"),
        )
        clean, dead, _, staged = clean_frame(df, kind)
        # Both outputs from one parse of the input: the staged rows are kept (memory, else
        # disk) between the two writes instead of being read and parsed twice.
        staged.persist(StorageLevel.MEMORY_AND_DISK)
        clean.write.mode("overwrite").parquet(os.path.join(out_dir, kind))
        dead.write.mode("overwrite").parquet(os.path.join(out_dir, f"{kind}_dead_letter"))
        staged.unpersist()


def fixtures(spark):
    from pyspark.sql import Row

    cases = common.fixtures()
    results = [None] * len(cases)
    for kind in common.KINDS:
        idx = [i for i, c in enumerate(cases) if c[0] == kind]
        df = spark.createDataFrame([Row(_i=i, line=cases[i][2].decode("utf-8", "replace")) for i in idx])
        clean, dead, data, _ = clean_frame(df, kind)
        for r in clean.collect():
            row = {c: r[c] for c in data}
            for c, val in row.items():
                if hasattr(val, "strftime"):
                    row[c] = val.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            results[r["_i"]] = (row, None)
        for r in dead.collect():
            results[r["_i"]] = (None, r["error"])
    common.check([r or (None, None) for r in results], cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--fixtures", action="store_true")
    a = ap.parse_args()
    spark = session(a.master)
    spark.sparkContext.setLogLevel("ERROR")
    if a.fixtures:
        fixtures(spark)
    if not (a.input and a.out):
        ap.error("--input and --out are required (or --fixtures)")
    t = time.monotonic()
    run(spark, a.input, a.out)
    print(json.dumps({"seconds": time.monotonic() - t}))
    spark.stop()


if __name__ == "__main__":
    main()
