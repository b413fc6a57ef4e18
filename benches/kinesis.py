#!/usr/bin/env python3
"""Kinesis -> Delta throughput of one `pinpipe run` process against kinesis-local.

    python3 benches/kinesis.py [--posts 50000] [--shards 4] [--burst 20000]

Needs a release build (target dir from CARGO_TARGET_DIR, or PINPIPE_BIN) and kinesis-local
(`bash .ci/install-servers.sh`; PINPIPE_KINESIS_LOCAL = its main.js). Everything runs on
127.0.0.1 and ends by itself (each phase has a time cap).

Prints, for the same pre-put records:
  - baseline: a bare GetRecords reader (this script, urllib, one shard after another,
    Limit 10000) draining the same streams: the server's own ceiling here;
  - pinpipe: `pinpipe run --stop-after N` from start to the last commit, as records/s and
    as a ratio to the baseline;
  - lag after a burst: with pinpipe running and caught up, `--burst` posts are put at once;
    the seconds from the end of the burst to the last of its rows committed, and the
    largest pinpipe_kinesis_millis_behind_latest seen meanwhile.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("PINPIPE_BIN", os.path.join(TARGET, "release", "pinpipe"))
MAIN_JS = os.environ.get(
    "PINPIPE_KINESIS_LOCAL",
    os.path.expanduser("~/.cache/pinpipe-tools/npm/node_modules/kinesis-local/main.js"),
)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, op, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "X-Amz-Target": "Kinesis_20131202." + op,
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Date": "20260101T000000Z",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=00",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def bare_read(port, streams):
    """Drains every shard from TRIM_HORIZON; returns records read."""
    n = 0
    for s in streams:
        for sh in call(port, "ListShards", {"StreamName": s})["Shards"]:
            it = call(port, "GetShardIterator", {"StreamName": s, "ShardId": sh["ShardId"], "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
            for _ in range(100000):
                r = call(port, "GetRecords", {"ShardIterator": it, "Limit": 10000})
                n += len(r["Records"])
                it = r.get("NextShardIterator")
                if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
                    break
    return n


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def metric(text, name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if re.match(name + r"[{ ]", l))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=50000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--burst", type=int, default=20000)
    a = ap.parse_args()
    if not os.path.exists(BIN) or not os.path.exists(MAIN_JS):
        sys.exit(f"need {BIN} (cargo build --release) and {MAIN_JS} (bash .ci/install-servers.sh)")
    work = tempfile.mkdtemp(prefix="pinpipe-kinesis-bench-")
    kport, mport = free_port(), free_port()
    env = dict(os.environ, KINESIS_MOCK_PLAIN_PORT=str(kport), KINESIS_MOCK_TLS_PORT=str(free_port()),
               LOG_LEVEL="WARN", CREATE_STREAM_DURATION="10ms")
    server = subprocess.Popen(["node", "main.js"], cwd=os.path.dirname(MAIN_JS), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = None
    try:
        for _ in range(300):
            try:
                call(kport, "ListStreams", {})
                break
            except OSError:
                time.sleep(0.1)
        streams = [f"streaming-bench-{k}" for k in ("pin", "geo", "user")]
        for s in streams:
            call(kport, "CreateStream", {"StreamName": s, "ShardCount": a.shards})
        for s in streams:
            for _ in range(300):
                if call(kport, "DescribeStreamSummary", {"StreamName": s})["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                    break
                time.sleep(0.05)
        cfg = os.path.join(work, "pinpipe.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[tables]
location = "{work}/tables"
[writer]
max_age_ms = 1000
[metrics]
listen = "127.0.0.1:{mport}"
[kafka]
enabled = false
[kinesis]
enabled = true
stream_prefix = "bench"
endpoint = "http://127.0.0.1:{kport}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
idle_ms = 100
""")
        penv = dict(os.environ, PINPIPE_CONFIG=cfg, PINPIPE_LOG="error")
        t = time.time()
        subprocess.run([BIN, "emulate", "--to", "kinesis", "--no-progress", "--count", str(a.posts)], env=penv, check=True, timeout=1800)
        put_s = time.time() - t
        records = 3 * a.posts
        t = time.time()
        bare = bare_read(kport, streams)
        bare_s = time.time() - t
        assert bare == records, f"bare reader saw {bare} of {records}"
        t = time.time()
        out = subprocess.run([BIN, "run", "--no-progress", "--stop-after", str(records)], env=penv,
                             capture_output=True, text=True, timeout=1800)
        run_s = time.time() - t
        if out.returncode != 0:
            sys.exit(out.stdout + out.stderr)
        summary = out.stdout.splitlines()[0]
        # Lag after a burst: a fresh run (it resumes, nothing to read), then a burst.
        run = subprocess.Popen([BIN, "run", "--no-progress"], env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if "pinpipe_owned_partitions{source=\"kinesis\"} %d" % (3 * a.shards) in scrape(mport):
                break
            time.sleep(0.1)
        base = metric(scrape(mport), "pinpipe_rows_committed_total")
        t = time.time()
        subprocess.run([BIN, "emulate", "--to", "kinesis", "--no-progress", "--count", str(a.burst), "--seed", "9"], env=penv, check=True, timeout=1800)
        burst_end = time.time()
        worst_behind = 0.0
        deadline = time.time() + 600
        while time.time() < deadline:
            text = scrape(mport)
            worst_behind = max(worst_behind, max([float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                                                  if l.startswith("pinpipe_kinesis_millis_behind_latest{")] or [0.0]))
            if metric(text, "pinpipe_rows_committed_total") - base >= 3 * a.burst:
                break
            time.sleep(0.1)
        caught_up = time.time() - burst_end
        burst_put = burst_end - t
    finally:
        if run:
            run.terminate()
            run.wait(timeout=60)
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"input: {a.posts} posts = {records} records over 3 streams x {a.shards} shards (kinesis-local, Node, same 2 cores)")
    print(f"put (pinpipe emulate --to kinesis): {put_s:.1f} s, {records / put_s:,.0f} records/s")
    print(f"baseline bare GetRecords reader:    {bare_s:.1f} s, {records / bare_s:,.0f} records/s (1.00x)")
    print(f"pinpipe run Kinesis -> Delta:       {run_s:.1f} s, {records / run_s:,.0f} records/s "
          f"({bare_s / run_s:.2f}x the bare reader)   [{summary}]")
    print(f"burst of {3 * a.burst} records put in {burst_put:.1f} s: all committed {caught_up:.1f} s after the burst ended; "
          f"max MillisBehindLatest seen {worst_behind:,.0f} ms")


if __name__ == "__main__":
    main()
