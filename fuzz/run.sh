#!/usr/bin/env bash
# Bounded fuzzing of pinpipe's untrusted-input parsers with cargo-fuzz (libFuzzer):
#   bash fuzz/run.sh [seconds per target, default 30]
# Installs cargo-fuzz into $PINPIPE_TOOLS (cached), seeds each corpus with the shared
# cleaning vectors, runs each target for the given time and fails on any crash. A crash
# leaves its input under fuzz/artifacts/<target>/ (replay: cargo fuzz run <target> FILE).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
tools=${PINPIPE_TOOLS:-$HOME/.cache/pinpipe-tools}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/pinpipe-fuzz-target}

if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --locked --root "$tools" cargo-fuzz@0.13.1
fi
export PATH="$tools/bin:$PATH"
# libFuzzer's instrumentation needs unstable rustc flags: the nightly toolchain where the
# machine has one, else the stable compiler with RUSTC_BOOTSTRAP (same flags, no download).
if cargo +nightly --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

fixtures=${PINPIPE_FIXTURES:-}
for d in ../../shared/fixtures/cleaning /work/shared/fixtures/cleaning; do
  [ -z "$fixtures" ] && [ -d "$d" ] && fixtures=$d
done
corpus=$CARGO_TARGET_DIR/corpus
mkdir -p "$corpus/clean" "$corpus/gateway_body"
if [ -n "$fixtures" ]; then
  python3 - "$fixtures" "$corpus" <<'PY'
import base64, json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for f in sorted(src.glob("*.jsonl")) + sorted(src.glob("pending/*.jsonl")):
    for i, line in enumerate(f.read_text().splitlines()):
        if not line.strip():
            continue
        raw = json.loads(line)["raw"]
        name = f"{f.parent.name}-{f.stem}-{i}"
        (out / "clean" / name).write_text(raw)
        # The Kinesis shape with base64 Data (the API's), beside the JSON value shapes.
        b64 = base64.b64encode(raw.encode()).decode()
        (out / "gateway_body" / f"{name}-b64").write_text(
            json.dumps({"StreamName": "s", "Records": [{"Data": b64, "PartitionKey": "k"}]}))
        try:
            body = json.dumps({"records": [{"value": json.loads(raw)}]})
        except ValueError:
            body = raw
        (out / "gateway_body" / name).write_text(body)
PY
fi

# -s none: no AddressSanitizer (safe Rust; a panic or overflow is what is looked for),
# which keeps the build and the runs fast. Debug assertions stay on (overflow checks).
for target in clean gateway_body; do
  echo "fuzz $target for ${secs}s"
  log=$CARGO_TARGET_DIR/$target.log
  rc=0
  "${fuzz[@]}" run -s none --release "$target" "$corpus/$target" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|INFO: seed corpus)|panicked|SUMMARY|ERROR" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz $target failed (exit $rc)"
    exit 1
  fi
done
