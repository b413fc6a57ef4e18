#!/usr/bin/env bash
# The container image, built and run here: the Dockerfile's runtime stage built by podman
# on a Debian base assembled with debootstrap (no registry is reachable here), then run the
# way the k8s manifests run it. `.ci/run` runs it after the tests.
#
#   bash .ci/image-test.sh [--binary PATH]
#
# --binary: the pinpipe binary to put in the image [default: the `dist` build,
# $CARGO_TARGET_DIR/dist/pinpipe, built when missing]. `.ci/run` passes the release binary
# the tests just built: building the dist profile (thin LTO) again would cost CI ~25 min.
#
# What is checked, each a failure when it does not hold:
#  1. The image is built from the Dockerfile's own runtime stage. Two lines are
#     substituted, and printed: its FROM (the registry's debian:<release>-slim, pulled by
#     nobody here) by the debootstrap base of the same release, and its
#     `COPY --from=build` by a COPY of the binary.
#  2. Every package the runtime stage's `apt-get install` names is installed in the image,
#     and every shared library the binary needs resolves inside it (ldd): a new system
#     library dependency that the Dockerfile does not install fails here, not in a pod.
#  3. As the manifests run it (USER 65532 from the image, read-only root filesystem, all
#     capabilities dropped, no privilege escalation, the config mounted read-only at
#     /etc/pinpipe, a writable volume at /tmp): `pinpipe demo` completes and writes its
#     tables into the volume; `pinpipe run` (the image's CMD) answers /healthz while its
#     broker is unreachable (liveness does not depend on the brokers), /readyz answers 503,
#     and SIGTERM stops it with status 0.
# Figures printed: image size, the time from `podman run` to the first /healthz answer,
# the demo's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
CACHE=${PINPIPE_IMAGE_CACHE:-$HOME/.cache/pinpipe-image}
BIN=
while [ $# -gt 0 ]; do
  case $1 in
    --binary) BIN=$2; shift 2 ;;
    *) echo "image-test: unknown argument $1 (usage: $0 [--binary PATH])" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { echo "image-test: $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

# podman, and runc: crun (podman's default) refuses this machine's hybrid cgroup layout.
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# This machine cannot raise rlimits (no CAP_SYS_RESOURCE), and podman's defaults ask
# for more than it has: ask for less (lowering is always allowed; pinpipe needs far
# fewer files and threads).
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit "nofile=$(( $(ulimit -Hn) < 16384 ? $(ulimit -Hn) : 16384 ))" --ulimit nproc=4096)

if [ -z "$BIN" ]; then
  BIN=$CARGO_TARGET_DIR/dist/pinpipe
  if [ ! -x "$BIN" ]; then
    say "building the dist profile (cargo build --profile dist --locked --bin pinpipe)"
    cargo build --profile dist --locked --bin pinpipe
  fi
fi
[ -x "$BIN" ] || fail "no binary at $BIN"

# The runtime stage: from the last FROM to the end.
stage=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' Dockerfile)
from=$(printf '%s\n' "$stage" | head -1)
release=$(printf '%s\n' "$from" | sed -n 's/^FROM debian:\([a-z]*\)-slim.*/\1/p')
[ -n "$release" ] || fail "the runtime stage starts with '$from'; this script assembles debian:<release>-slim only"
# Packages its apt-get install names (continuation lines joined).
packages=$(printf '%s\n' "$stage" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
  grep -o 'apt-get install[^&]*' | sed 's/apt-get install//' | tr ' ' '\n' | grep -v '^-' | grep -v '^$' | sort -u)
[ -n "$packages" ] || fail "no apt-get install found in the runtime stage"
dest=$(printf '%s\n' "$stage" | sed -n 's/^COPY --from=build [^ ]* \(.*\)$/\1/p')
[ -n "$dest" ] || fail "no 'COPY --from=build <binary> <dest>' in the runtime stage"

# The base: debootstrap's minbase of the same release (what debian:<release>-slim is built
# from), without the stage's packages, so its apt-get installs them as in a docker build.
# Cached as an image, rebuilt only when the release changes.
base=localhost/pinpipe-base:$release
if ! "${PODMAN[@]}" image exists "$base"; then
  mkdir -p "$CACHE"
  root=$CACHE/rootfs-$release
  if [ ! -x "$root/bin/sh" ]; then
    say "debootstrap --variant=minbase $release (once; cached in $root)"
    rm -rf "$root"
    as_root debootstrap --variant=minbase "$release" "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
      fail "debootstrap failed: see $CACHE/debootstrap.log"
    # The downloaded .debs and package lists are not in a slim image either.
    as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  fi
  as_root tar -C "$root" -c . | "${PODMAN[@]}" import - "$base" >/dev/null 2>&1 ||
    fail "podman import of $root failed"
fi

work=$(mktemp -d)
cleanup() {
  "${PODMAN[@]}" rm -f pinpipe-image-test >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ctx"
cp "$BIN" "$work/ctx/pinpipe"
printf '%s\n' "$stage" | sed -e "1s|.*|FROM $base|" -e "s|^COPY --from=build [^ ]* |COPY pinpipe |" >"$work/ctx/Containerfile"
say "the Dockerfile's runtime stage, as built here:"
diff <(printf '%s\n' "$stage") "$work/ctx/Containerfile" | sed 's/^/  /' || true
image=localhost/pinpipe:image-test
t=$SECONDS
"${PODMAN[@]}" build --pull=never --isolation chroot "${LIMITS[@]}" -q -t "$image" -f "$work/ctx/Containerfile" "$work/ctx" >/dev/null ||
  fail "podman build of the runtime stage failed"
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")
say "built $image in $((SECONDS - t)) s: $((size / 1000000)) MB (binary $(($(stat -c %s "$BIN") / 1000000)) MB)"

run() { "${PODMAN[@]}" run --rm "${LIMITS[@]}" "$@"; }

# 2. Packages and libraries.
installed=$(run --entrypoint dpkg-query "$image" -W -f '${Package}\n' | sed 's/:.*//' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$packages") <(printf '%s\n' "$installed"))
[ -z "$missing" ] || fail "named by the Dockerfile but not installed in the image: $missing"
say "installed as the Dockerfile says: $(echo $packages)"
libs=$(run --entrypoint ldd "$image" "$dest") || fail "ldd $dest failed in the image"
if grep -q 'not found' <<<"$libs"; then
  fail "libraries the binary needs that the image lacks: $(grep 'not found' <<<"$libs" | tr '\n' ' ')"
fi
say "every library the binary links resolves in the image ($(grep -c '=>' <<<"$libs") libraries)"

# 3. As the manifests run it.
mkdir -p "$work/config" "$work/tmp"
cp config/pinpipe.toml "$work/config/pinpipe.toml"
chmod -R a+rX "$work/config"
as_root chown 65532:65532 "$work/tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
POD=(--read-only --cap-drop=ALL --security-opt=no-new-privileges --network host
  -v "$work/config:/etc/pinpipe:ro" -v "$work/tmp:/tmp"
  -e PINPIPE_CONFIG=/etc/pinpipe/pinpipe.toml -e PINPIPE__METRICS__LISTEN="127.0.0.1:$port"
  -e PINPIPE__KAFKA__BROKERS="127.0.0.1:$closed")
uid=$(run "${POD[@]}" --entrypoint id "$image" -u)
[ "$uid" = 65532 ] || fail "the image runs as uid $uid, the manifests require 65532"

t=$SECONDS
demo=$(run "${POD[@]}" "$image" demo --count 2000 2>&1) || fail "pinpipe demo in the image: $demo"
grep -q '^run: 6000 records' <<<"$demo" || fail "the demo did not report 6000 records: $demo"
for table in pin geo user pin_raw; do
  [ -d "$work/tmp/data/$table/_delta_log" ] || fail "the demo wrote no $table table into the /tmp volume"
done
say "pinpipe demo in the image: $((SECONDS - t)) s; $(grep '^run:' <<<"$demo")"

started=$(date +%s.%N)
"${PODMAN[@]}" run -d --name pinpipe-image-test "${LIMITS[@]}" "${POD[@]}" "$image" >/dev/null
healthz=
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
    healthz=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
    break
  fi
  "${PODMAN[@]}" container exists pinpipe-image-test || fail "pinpipe run exited: $("${PODMAN[@]}" logs pinpipe-image-test 2>&1 | tail -5)"
  sleep 0.1
done
[ -n "$healthz" ] || fail "/healthz did not answer within 30 s: $("${PODMAN[@]}" logs pinpipe-image-test 2>&1 | tail -5)"
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
[ "$ready" = 503 ] || fail "/readyz answered $ready with no broker (expected 503)"
"${PODMAN[@]}" stop -t 20 pinpipe-image-test >/dev/null
status=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' pinpipe-image-test)
[ "$status" = 0 ] || fail "pinpipe run exited $status on SIGTERM: $("${PODMAN[@]}" logs pinpipe-image-test 2>&1 | tail -5)"
say "pinpipe run in the image: /healthz answered ${healthz} s after podman run; /readyz 503 without a broker; SIGTERM -> exit 0"
say "ok"
