#!/usr/bin/env python3
"""Baseline: what a small team would write with polars and the `deltalake` package.

    polars_delta.py --input DIR --tables OUT     # raw JSON files -> six Delta tables
    polars_delta.py --fixtures                   # checks the cleaning against the vectors

Same contract as pinpipe (`shared/spec/cleaning.md`): every line becomes a clean row or a
dead letter. Records are parsed one by one with the standard library's `json` (polars'
own NDJSON reader refuses a whole file on one bad line, and a per-record reject needs the
record's own types), checked and coerced in Python, then the column work (placeholders,
prefixes, names, coordinates, types) is done by polars and written with
`deltalake.write_deltalake`, one append per table per chunk of rows.
"""
import argparse
import json
import math
import os
import re
import sys
import time
from datetime import datetime, timezone

import polars as pl
from deltalake import write_deltalake

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

I64 = (-(2**63), 2**63 - 1)
I32 = (-(2**31), 2**31 - 1)
NUMBER = re.compile(r"[+-]?[0-9][0-9.eE+-]*\Z")
COUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?([kM]?)\Z")
TS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?\Z"
)
EPOCH = datetime(1970, 1, 1)


class Reject(Exception):
    pass


def _constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject("invalid utf-8")
    try:
        # json.loads refuses a leading BOM and trailing garbage; NaN/Infinity are refused
        # here. A repeated key: the last value wins, as the contract says.
        v = json.loads(text, parse_constant=_constant)
    except ValueError as e:
        raise Reject(f"invalid json: {e}")
    if not isinstance(v, dict):
        raise Reject("not a json object")
    return v


def to_int(v, field, lo, hi):
    if v is None:
        return None
    if isinstance(v, bool):
        raise Reject(f"{field}: not an integer")
    if isinstance(v, int):
        i = v
    elif isinstance(v, float):
        i = _float_int(v, field)
    elif isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            i = int(s, 10) if "_" not in s else None
        except ValueError:
            i = None
        if i is None:
            if not NUMBER.match(s):
                raise Reject(f"{field}: not an integer")
            if all(c in "0123456789+-" for c in s):
                raise Reject(f"{field}: out of range")
            try:
                i = _float_int(float(s), field)
            except ValueError:
                raise Reject(f"{field}: not an integer")
    else:
        raise Reject(f"{field}: not an integer")
    if i < lo or i > hi:
        raise Reject(f"{field}: out of range")
    return i


def _float_int(f, field):
    if not math.isfinite(f) or f != int(f):
        raise Reject(f"{field}: not an integer")
    if f >= 2.0**63:
        raise Reject(f"{field}: out of range")
    return int(f)


def key(v, field):
    i = to_int(v, field, *I64)
    if i is None:
        raise Reject(f"{field}: missing")
    return i


def to_float(v, field):
    if v is None:
        return None
    if isinstance(v, bool):
        raise Reject(f"{field}: not a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        if NUMBER.match(s):
            try:
                f = float(s)
                if math.isfinite(f):
                    return f
            except ValueError:
                pass
    raise Reject(f"{field}: not a number")


def to_str(v, field):
    if v is None:
        return None
    if isinstance(v, str):
        return v if v.strip() else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Reject(f"{field}: not a string")
    return str(v) if isinstance(v, int) else repr(v)


def to_ts(v, field):
    """Microseconds since the epoch, UTC."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise Reject(f"{field}: not a timestamp")
    s = v.strip()
    if not s:
        return None
    m = TS.match(s)
    if not m:
        raise Reject(f"{field}: not a timestamp")
    y, mo, d, h, mi, se, frac, _z, sign, oh, om = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(se))
    except ValueError:
        raise Reject(f"{field}: not a timestamp")
    off = 0
    if sign:
        oh, om = int(oh), int(om or 0)
        if oh > 23 or om > 59:
            raise Reject(f"{field}: not a timestamp")
        off = (oh * 3600 + om * 60) * (-1 if sign == "-" else 1)
    micros = int((frac or "")[:6].ljust(6, "0"))
    delta = dt - EPOCH
    return ((delta.days * 86400 + delta.seconds) - off) * 1_000_000 + micros


def to_count(v):
    s = to_str(v, "follower_count")
    if s is None or s == "User Info Error":
        return None
    m = COUNT.match(s.strip())
    if not m:
        raise Reject("follower_count: not a count")
    whole, frac, suffix = m.groups()
    frac = frac or ""
    scaled = int(whole + frac) * {"": 1, "k": 1000, "M": 1_000_000}[suffix]
    if scaled % 10 ** len(frac):
        raise Reject("follower_count: not a count")
    n = scaled // 10 ** len(frac)
    if n > I64[1]:
        raise Reject("follower_count: out of range")
    return n


PIN_TEXT = ("unique_id", "title", "description", "poster_name", "tag_list", "is_image_or_video", "image_src", "save_location", "category")


FIELDS = {
    "pin": ("unique_id", "title", "description", "poster_name", "follower_count", "tag_list",
            "is_image_or_video", "image_src", "downloaded", "save_location", "category"),
    "geo": ("timestamp", "latitude", "longitude", "country"),
    "user": ("first_name", "last_name", "age", "date_joined"),
}


def wrong_kind(v, kind):
    """Rule 8, after the key: none of the kind's other fields is present (null counts)."""
    if not any(f in v for f in FIELDS[kind]):
        raise Reject(f"wrong kind: no {kind} fields")


def clean_pin(v):
    ind = key(v.get("index"), "index")
    wrong_kind(v, "pin")
    count = to_count(v.get("follower_count"))
    text = [to_str(v.get(f), f) for f in PIN_TEXT]
    return (ind, count, *text, to_int(v.get("downloaded"), "downloaded", *I32))


def clean_geo(v):
    ind = key(v.get("ind"), "ind")
    wrong_kind(v, "geo")
    lat = to_float(v.get("latitude"), "latitude")
    lon = to_float(v.get("longitude"), "longitude")
    if lat is not None and not -90 <= lat <= 90:
        raise Reject("latitude: out of range")
    if lon is not None and not -180 <= lon <= 180:
        raise Reject("longitude: out of range")
    return (ind, to_str(v.get("country"), "country"), lat, lon, to_ts(v.get("timestamp"), "timestamp"))


def clean_user(v):
    ind = key(v.get("ind"), "ind")
    wrong_kind(v, "user")
    first = to_str(v.get("first_name"), "first_name")
    last = to_str(v.get("last_name"), "last_name")
    return (ind, first, last, to_int(v.get("age"), "age", *I32), to_ts(v.get("date_joined"), "date_joined"))


CLEAN = {"pin": clean_pin, "geo": clean_geo, "user": clean_user}
RAW_COLUMNS = {
    "pin": ("ind", "follower_count", *PIN_TEXT, "downloaded"),
    "geo": ("ind", "country", "latitude", "longitude", "timestamp"),
    "user": ("ind", "first_name", "last_name", "age", "date_joined"),
}
RAW_TYPES = {
    "pin": [pl.Int64, pl.Int64] + [pl.String] * len(PIN_TEXT) + [pl.Int32],
    "geo": [pl.Int64, pl.String, pl.Float64, pl.Float64, pl.Int64],
    "user": [pl.Int64, pl.String, pl.String, pl.Int32, pl.Int64],
}
LINEAGE = [("_source", pl.String), ("_stream", pl.String), ("_partition", pl.String), ("_position", pl.String)]
UTC = pl.Datetime("us", "UTC")


def null_if(col, *values):
    return pl.when(pl.col(col).is_in(list(values))).then(None).otherwise(pl.col(col)).alias(col)


def frame(kind, rows, lineage, ingested_at):
    """The clean table's frame from coerced tuples: the column work, in polars."""
    cols = RAW_COLUMNS[kind]
    schema = dict(zip(cols, RAW_TYPES[kind]))
    schema.update(LINEAGE)
    df = pl.DataFrame([r + l for r, l in zip(rows, lineage)], schema=schema, orient="row")
    if kind == "pin":
        df = df.with_columns(
            null_if("title", "No Title Data Available"),
            null_if("description", "No description available", "No description available Story format", "Untitled"),
            null_if("poster_name", "User Info Error"),
            null_if("tag_list", "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"),
            null_if("image_src", "Image src error."),
            pl.col("save_location").str.strip_prefix("Local save in "),
        ).with_columns(
            pl.when(pl.col("save_location").str.strip_chars() == "").then(None).otherwise(pl.col("save_location")).alias("save_location")
        )
        data = ["ind", "unique_id", "title", "description", "follower_count", "poster_name", "tag_list", "is_image_or_video", "image_src", "save_location", "category", "downloaded"]
    elif kind == "geo":
        df = df.with_columns(
            pl.when(pl.col("latitude").is_not_null() & pl.col("longitude").is_not_null())
            .then(pl.concat_list("latitude", "longitude"))
            .otherwise(None)
            .alias("coordinates"),
            pl.col("timestamp").cast(UTC),
        )
        data = ["ind", "country", "coordinates", "timestamp"]
    else:
        df = df.with_columns(
            pl.concat_str("first_name", "last_name", separator=" ", ignore_nulls=True).alias("user_name"),
            pl.col("date_joined").cast(UTC),
        ).with_columns(
            pl.when(pl.col("first_name").is_null() & pl.col("last_name").is_null()).then(None).otherwise(pl.col("user_name")).alias("user_name")
        )
        data = ["ind", "user_name", "age", "date_joined"]
    return df.with_columns(pl.lit(ingested_at, UTC).alias("_ingested_at")).select(*data, *[c for c, _ in LINEAGE], "_ingested_at")


def dead_frame(rows, ingested_at):
    df = pl.DataFrame(rows, schema=LINEAGE + [("error", pl.String), ("raw", pl.Binary)], orient="row")
    return df.with_columns(pl.lit(ingested_at, UTC).alias("_ingested_at")).select(
        *[c for c, _ in LINEAGE], "_ingested_at", "error", "raw"
    )


def run(input_dir, tables, chunk_rows):
    files = common.list_inputs(input_dir)
    pending = {k: ([], []) for k in common.KINDS}
    dead = {k: [] for k in common.KINDS}
    counts = {f"{k}{s}": 0 for k in common.KINDS for s in ("", "_dead_letter")}
    ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)

    def flush(kind, final=False):
        rows, lineage = pending[kind]
        if rows and (final or len(rows) >= chunk_rows):
            df = frame(kind, rows, lineage, ingested_at)
            write_deltalake(os.path.join(tables, kind), df.to_arrow(), mode="append")
            counts[kind] += len(rows)
            pending[kind] = ([], [])
        d = dead[kind]
        if d and (final or len(d) >= chunk_rows):
            write_deltalake(os.path.join(tables, f"{kind}_dead_letter"), dead_frame(d, ingested_at).to_arrow(), mode="append")
            counts[f"{kind}_dead_letter"] += len(d)
            dead[kind] = []

    for kind, topic, rel, path in files:
        clean = CLEAN[kind]
        rows, lineage = pending[kind]
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                raw = line.rstrip(b"\r\n")
                if not raw:
                    continue
                lin = ("batch", topic, rel, str(n))
                try:
                    rows.append(clean(loads(raw)))
                    lineage.append(lin)
                except Reject as e:
                    dead[kind].append(lin + (str(e), raw))
        flush(kind)
    for kind in common.KINDS:
        flush(kind, final=True)
    return counts


def fixtures():
    cases = common.fixtures()
    results = []
    for kind, _case, raw, _expect, _reject in cases:
        try:
            row = CLEAN[kind](loads(raw))
        except Reject as e:
            results.append((None, str(e)))
            continue
        df = frame(kind, [row], [("batch", "t", "k", "1")], datetime(2020, 1, 1))
        out = df.drop("_source", "_stream", "_partition", "_position", "_ingested_at").to_dicts()[0]
        for c, v in out.items():
            if isinstance(v, datetime):
                out[c] = v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        results.append((out, None))
    common.check(results, cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input")
    ap.add_argument("--tables")
    ap.add_argument("--chunk-rows", type=int, default=500_000, help="rows per Delta append (bounds memory)")
    ap.add_argument("--fixtures", action="store_true")
    a = ap.parse_args()
    if a.fixtures:
        fixtures()
    if not (a.input and a.tables):
        ap.error("--input and --tables are required (or --fixtures)")
    t = time.monotonic()
    counts = run(a.input, a.tables, a.chunk_rows)
    print(json.dumps({"seconds": time.monotonic() - t, "rows": counts}))


if __name__ == "__main__":
    main()
