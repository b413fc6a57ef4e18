#!/usr/bin/env python3
"""pinpipe side by side with what its users would otherwise run, on the same input, in
the same run, on this machine. One command:

    python3 benches/compare.py                  # 1M posts = 3M records (about 15-25 min)
    python3 benches/compare.py --posts 100000   # a quicker look

Steps:
 1. builds pinpipe (release) and writes the emulator's data for --posts posts as raw JSON
    files in the Kafka Connect layout (`pinpipe emulate --out`), every post distinct;
 2. floor (`cargo bench --bench floor`): a plain serde_json::Value parse of every record,
    one thread, in memory, and pinpipe's cleaner (clean -> Arrow) on the same records;
 3. `pinpipe batch`: the files -> six local Delta tables (clean + dead letter per kind);
 4. polars + deltalake (`baselines/polars_delta.py`): the same files -> the same six tables;
 5. PySpark, local[2] (`baselines/spark_clean.py`): the same files -> Parquet, the seed's
    engine with native expressions;
 6. Kafka -> Delta (`cargo bench --bench kafka`): the same number of posts pre-produced to
    librdkafka's mock broker, `pinpipe run` with 1 and 2 worker threads, and the
    produce-to-commit latency at a fixed rate; it prints its own ratios.
Each baseline's row counts per table are checked equal to pinpipe's (the run fails
otherwise). Wall time, CPU time and peak RSS are measured from outside for every process
tree. Figures are printed, never asserted; ratios are against figures of this same run.

Python baselines run in a virtualenv (--venv, default ~/.cache/pinpipe-tools/bench-venv)
made from baselines/requirements.txt when missing; PySpark needs a Java 17+ runtime.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "pinpipe")
BASE = os.path.join(ROOT, "benches", "baselines")
KINDS = ("pin", "geo", "user")
TABLES = [f"{k}{s}" for k in KINDS for s in ("", "_dead_letter")]
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def tree(root):
    """Pids of root and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def sample(pid):
    """(cpu seconds, rss bytes) of one process, or None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK, int(fields[21]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def measure(cmd, env=None, log_path=None, capture=False):
    """Runs cmd; returns dict(wall, cpu, rss_mib, out). CPU is the larger of what wait4
    reports and the sum over the process tree sampled every 100 ms (a JVM started by
    Python is not always reaped by it); peak RSS is the tree's largest sampled sum."""
    err = open(log_path, "w") if log_path else subprocess.DEVNULL
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if capture else err, stderr=err, cwd=ROOT)
    cpu_seen, peak = {}, [0]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            rss = 0
            for q in tree(p.pid):
                s = sample(q)
                if s:
                    cpu_seen[q] = max(cpu_seen.get(q, 0.0), s[0])
                    rss += s[1]
            peak[0] = max(peak[0], rss)
            done.wait(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    out = p.stdout.read().decode() if capture else ""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    done.set()
    th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        tail = open(log_path).read()[-3000:] if log_path else ""
        sys.exit(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{tail}")
    cpu = max(ru.ru_utime + ru.ru_stime, sum(cpu_seen.values()))
    return {"wall": wall, "cpu": cpu, "rss_mib": max(peak[0], ru.ru_maxrss * 1024) / 2**20, "out": out}


def venv_python(venv, install):
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        if not install:
            sys.exit(f"no virtualenv at {venv} (drop --no-install to create it)")
        log(f"creating {venv} from baselines/requirements.txt")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "-r", os.path.join(BASE, "requirements.txt")], check=True)
    return py


def count_rows(py, kind_of_store, root):
    """{table: rows} via deltalake (Delta) or pyarrow (Parquet), in the venv."""
    code = (
        "import json,os,sys\n"
        "import pyarrow.dataset as ds\n"
        "from deltalake import DeltaTable\n"
        "root, fmt = sys.argv[1], sys.argv[2]\n"
        "out = {}\n"
        f"for t in {TABLES!r}:\n"
        "    p = os.path.join(root, t)\n"
        "    if not os.path.exists(p): out[t] = 0; continue\n"
        "    out[t] = DeltaTable(p).to_pyarrow_dataset().count_rows() if fmt == 'delta' else ds.dataset(p, format='parquet').count_rows()\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([py, "-c", code, root, kind_of_store], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def du(path):
    files = size = 0
    for d, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(d, n))
    return files, size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=1_000_000, help="posts (3 records each) [1000000]")
    ap.add_argument("--work", default=None, help="scratch folder [a fresh temp dir, removed at the end]")
    ap.add_argument("--skip", action="append", default=[], choices=["spark", "polars", "kafka"])
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/pinpipe-tools/bench-venv"))
    ap.add_argument("--no-install", action="store_true", help="never create the virtualenv")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args()
    if a.posts < 1:
        ap.error("--posts must be at least 1")

    work = a.work or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pinpipe-compare-{os.getpid()}")
    if os.path.exists(work) and os.listdir(work):
        sys.exit(f"--work {work} is not empty: the run needs a clean folder")
    os.makedirs(work, exist_ok=True)
    raw, logs = os.path.join(work, "raw"), os.path.join(work, "logs")
    os.makedirs(logs)
    py = None if {"spark", "polars"} <= set(a.skip) else venv_python(a.venv, not a.no_install)

    log("building (cargo build --release, cargo bench --no-run)")
    subprocess.run(["cargo", "build", "--release", "--bin", "pinpipe", "-q"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--bench", "floor", "--no-run", "-q"], cwd=ROOT, check=True)
    env = dict(os.environ, PINPIPE_LOG="warn", RUST_BACKTRACE="0")
    # A pool this large makes every post distinct: no repeated strings flattering anyone's
    # compression or caches.
    env["PINPIPE__EMULATE__INDEX_POOL"] = str(1 << 40)

    log(f"emulate: {a.posts} posts -> {raw}")
    measure([BIN, "emulate", "--count", str(a.posts), "--out", raw, "--no-progress"], env=env, log_path=f"{logs}/emulate.log")
    files, in_bytes = du(raw)
    by_topic = {}
    for d, _, names in os.walk(os.path.join(raw, "topics")):
        topic = os.path.relpath(d, os.path.join(raw, "topics")).split(os.sep)[0]
        by_topic[topic] = by_topic.get(topic, 0) + sum(os.path.getsize(os.path.join(d, n)) for n in names)

    log("floor: serde_json parse and pinpipe clean, one thread, in memory")
    fl = measure(["cargo", "bench", "-q", "--bench", "floor", "--", raw], env=env, log_path=f"{logs}/floor.log", capture=True)
    floor = json.loads(fl["out"].strip().splitlines()[-1])
    records = floor["records"]
    log(f"{records} records, {in_bytes / 1e6:.1f} MB in {files} files")

    results = {}
    log("pinpipe batch -> Delta")
    pp_tables = os.path.join(work, "out", "pinpipe")
    results["pinpipe"] = measure([BIN, "batch", "--input", raw, "--tables", pp_tables, "--no-progress"], env=env, log_path=f"{logs}/pinpipe.log")
    results["pinpipe"]["files"], results["pinpipe"]["bytes"] = du(pp_tables)
    want = count_rows(py, "delta", pp_tables) if py else None
    if want is not None and sum(want.values()) != records:
        sys.exit(f"pinpipe wrote {sum(want.values())} rows for {records} records: {want}")

    if "polars" not in a.skip:
        log("polars + deltalake -> Delta")
        out = os.path.join(work, "out", "polars")
        results["polars"] = measure([py, os.path.join(BASE, "polars_delta.py"), "--input", raw, "--tables", out], log_path=f"{logs}/polars.log", capture=True)
        results["polars"]["files"], results["polars"]["bytes"] = du(out)
        results["polars"]["rows"] = count_rows(py, "delta", out)
    if "spark" not in a.skip:
        log("PySpark local[2] -> Parquet")
        out = os.path.join(work, "out", "spark")
        results["spark"] = measure([py, os.path.join(BASE, "spark_clean.py"), "--input", raw, "--out", out], log_path=f"{logs}/spark.log", capture=True)
        # The job's own time, from its first read to its last write: without the JVM's
        # start and stop, which a long-running cluster would not pay per job.
        results["spark"]["job"] = json.loads(results["spark"]["out"].strip().splitlines()[-1])["seconds"]
        results["spark"]["files"], results["spark"]["bytes"] = du(out)
        results["spark"]["rows"] = count_rows(py, "parquet", out)
    if want is not None:
        results["pinpipe"]["rows"] = want
    for name in ("polars", "spark"):
        if name in results and results[name]["rows"] != want:
            sys.exit(f"{name} row counts differ from pinpipe's:\n  {name}: {results[name]['rows']}\n  pinpipe: {want}")

    # ---- the table
    cores = os.cpu_count()
    parse_rate = records / floor["parse_seconds"]
    print()
    print(f"Input: {a.posts} posts = {records} records, {in_bytes / 1e6:.1f} MB of JSON Lines in {files} files; {cores} cores")
    if want:
        print("Rows per table (every baseline equal): " + ", ".join(f"{t} {n}" for t, n in want.items()))
    print()
    head = f"{'':44} {'wall s':>8} {'records/s':>11} {'MB/s':>7} {'CPU s':>8} {'CPU µs/rec':>10} {'peak RSS MiB':>12} {'out files':>9} {'out MB':>7}"
    print(head)
    print("-" * len(head))
    print(f"{'floor: serde_json::Value parse (1 thread)':44} {floor['parse_seconds']:8.2f} {parse_rate:11,.0f} {in_bytes / 1e6 / floor['parse_seconds']:7.1f} {floor['parse_seconds']:8.2f} {1e6 * floor['parse_seconds'] / records:10.2f}")
    print(f"{'pinpipe clean -> Arrow (1 thread)':44} {floor['clean_seconds']:8.2f} {records / floor['clean_seconds']:11,.0f} {in_bytes / 1e6 / floor['clean_seconds']:7.1f} {floor['clean_seconds']:8.2f} {1e6 * floor['clean_seconds'] / records:10.2f}")
    labels = {"pinpipe": "pinpipe batch -> Delta", "polars": "polars + deltalake -> Delta", "spark": "PySpark local[2] -> Parquet"}
    for name, r in results.items():
        print(
            f"{labels[name]:44} {r['wall']:8.2f} {records / r['wall']:11,.0f} {in_bytes / 1e6 / r['wall']:7.1f} {r['cpu']:8.2f} {1e6 * r['cpu'] / records:10.2f} {r['rss_mib']:12.0f} {r['files']:9} {r['bytes'] / 1e6:7.1f}"
        )
    pp = results["pinpipe"]
    print()
    print("Ratios (same input, same run):")
    aims = []

    def ratio(label, value, aim, ok):
        aims.append((label, value, aim, ok))
        print(f"  {label:58} {value:8.2f}x   aim {aim:8} {'met' if ok else 'MISSED'}")

    if "spark" in results:
        v = results["spark"]["wall"] / pp["wall"]
        ratio("pinpipe records/s vs PySpark", v, ">= 10x", v >= 10)
        v = results["spark"]["job"] / pp["wall"]
        print(f"  {'  the same, Spark job time only (no JVM start/stop)':58} {v:8.2f}x")
    if "polars" in results:
        v = results["polars"]["wall"] / pp["wall"]
        ratio("pinpipe records/s vs polars + deltalake", v, ">= 3x", v >= 3)
    v = pp["cpu"] / floor["parse_seconds"]
    ratio("pinpipe batch CPU per record vs the serde_json parse floor", v, "<= 3x", v <= 3)
    v = floor["clean_seconds"] / floor["parse_seconds"]
    print(f"  {'pinpipe clean (1 thread) time vs the parse floor':58} {v:8.2f}x")
    print(f"  {'pinpipe batch peak RSS':58} {pp['rss_mib']:8.0f} MiB aim <= 300 MiB {'met' if pp['rss_mib'] <= 300 else 'MISSED'}")

    kafka_out = None
    if "kafka" not in a.skip:
        # The mock broker keeps at most 5 MiB per partition; size the topics so nothing is
        # trimmed (the bench checks that too).
        parts = max(48, int(max(by_topic.values()) / (4 * 2**20)) + 1)
        log(f"Kafka -> Delta: cargo bench --bench kafka ({a.posts} posts, {parts} partitions per topic)")
        kenv = dict(env, PINPIPE_BENCH_POSTS=str(a.posts), PINPIPE_BENCH_PARTITIONS=str(parts))
        k = measure(["cargo", "bench", "-q", "--bench", "kafka"], env=kenv, log_path=f"{logs}/kafka.log", capture=True)
        kafka_out = k["out"]
        print()
        print("Kafka -> Delta (cargo bench --bench kafka, same post count):")
        print("  " + kafka_out.strip().replace("\n", "\n  "))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"posts": a.posts, "records": records, "input_bytes": in_bytes, "input_files": files, "floor": floor,
                       "results": {n: {k: v for k, v in r.items() if k != "out"} for n, r in results.items()},
                       "aims": aims, "kafka": kafka_out}, f, indent=1)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
