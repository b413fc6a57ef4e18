#!/usr/bin/env bash
# Keeps the build cache outside the clone from filling the disk. Every edit of a test
# file links a fresh test binary (hundreds of MB: deltalake and DataFusion are static)
# under a new hash and cargo never deletes the old one, so a cache that lives across runs
# grows by the size of the suite each time. Only the newest two binaries per name are
# kept: the next build relinks anything it still needs. Usage: prune-cache.sh TARGET_DIR
set -euo pipefail
target=${1:?usage: prune-cache.sh TARGET_DIR}
freed=0
for deps in "$target"/release/deps "$target"/debug/deps; do
  [ -d "$deps" ] || continue
  # Executables named <name>-<16 hex>, newest first, grouped by name.
  while IFS= read -r f; do
    size=$(stat -c %s "$f")
    rm -f -- "$f" "${f}.d"
    freed=$((freed + size))
  done < <(find "$deps" -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
             -regex '.*/[a-z0-9_]+-[0-9a-f]{16}' -printf '%T@ %p\n' \
           | sort -rn | awk '{ p=$2; n=p; sub(/-[0-9a-f]+$/, "", n); if (++seen[n] > 2) print p }')
done
echo "build cache: removed $((freed / 1024 / 1024)) MB of stale test binaries; $(df -h --output=avail "$target" 2>/dev/null | tail -1 | tr -d ' ') free"
