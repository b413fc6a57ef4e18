"""Shared by the baselines: finding the input files and checking the fixtures.

The input is the Kafka Connect S3 sink layout that `pinpipe emulate --out DIR` writes and
`pinpipe batch` reads: `DIR/topics/<prefix>.<kind>/partition=<p>/<topic>+<p>+<offset>.json`,
JSON Lines. The kind is the topic's suffix.
"""
import json
import os
import sys

KINDS = ("pin", "geo", "user")
FIXTURES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "shared",
    "fixtures",
    "cleaning",
)


def list_inputs(root):
    """[(kind, topic, relative key, path)] for every *.json file under root, sorted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            parts = rel.split(os.sep)
            if len(parts) < 3 or parts[0] != "topics":
                continue
            topic = parts[1]
            kind = topic.rsplit(".", 1)[-1]
            if kind in KINDS:
                out.append((kind, topic, rel, path))
    out.sort()
    if not out:
        sys.exit(f"no topics/<prefix>.pin|geo|user/**/*.json files under {root}")
    return out


def fixtures(path=None):
    """[(kind, case, raw bytes, expect dict or None, reject prefix or None)]."""
    path = path or os.environ.get("PINPIPE_FIXTURES", FIXTURES)
    out = []
    files = [(kind, os.path.join(path, f"{kind}.jsonl")) for kind in KINDS]
    # Vectors of rules added since, while they wait to be merged into <kind>.jsonl.
    files += [(kind, p) for kind in KINDS if os.path.exists(p := os.path.join(path, "pending", f"{kind}.jsonl"))]
    for kind, file in files:
        with open(file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    v = json.loads(line)
                    # `raw` is the message text; surrogate escapes stand for bytes that
                    # are not UTF-8 (the invalid-UTF-8 vectors).
                    raw = v["raw"].encode("utf-8", "surrogateescape")
                    out.append((kind, v["case"], raw, v.get("expect"), v.get("reject")))
    return out


def check(results, cases):
    """Compares (row or None, error or None) per case with the vectors; exits 1 on a miss."""
    failed = 0
    for (kind, case, _raw, expect, reject), (row, error) in zip(cases, results):
        if reject is not None:
            want = reject.split(":")[0]
            ok = row is None and error is not None and error.split(":")[0] == want
            got = error
        else:
            ok = row == expect
            got = row if row is not None else error
        if not ok:
            failed += 1
            print(f"FAIL {kind}/{case}: want {reject or expect!r}, got {got!r}")
    print(f"fixtures: {len(cases) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
