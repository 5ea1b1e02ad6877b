#!/bin/bash
# Concurrent writers through the CLI (issue 21, item 3): W shell loops, each
# patching its own run with `cairn ws patch` back to back for S seconds, in
# one store. Counts acknowledged patches (exit 0 and the expected new seq);
# a refused or failed patch is retried with the same seq and counted apart.
# Afterwards each run's `_update_seq` must equal its acknowledged patches
# (a lost or doubled write shows there).
#
# Usage: benches/concurrent_writers.sh CAIRN_BINARY STORE SECONDS WRITERS TAG
#
# STORE is an existing store (e.g. the 100k-item work-tree store that
# `CAIRN_BENCH_KEEP=DIR CAIRN_BENCH_SIZES=100000 cargo bench --bench hooks`
# leaves in DIR/store-100000). TAG names the runs it boots (run_TAG_1..W),
# so that several rounds can share a store.
set -u
BIN=$1 STORE=$2 SECS=$3 W=$4 TAG=$5
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for w in $(seq 1 "$W"); do
  "$BIN" --store "$STORE" --json run boot --objective bench --run-id "run_${TAG}_$w" > /dev/null || exit 1
done
start=$(date +%s.%N)
end=$(echo "$start + $SECS" | bc)
for w in $(seq 1 "$W"); do
  (
    seq=0 acks=0 fails=0
    while (( $(echo "$(date +%s.%N) < $end" | bc) )); do
      patch="{\"append\":{\"sliding_context\":[{\"id\":\"c$seq\",\"content\":\"writer $w patch $seq\"}]}}"
      if out=$(echo "$patch" | "$BIN" --store "$STORE" --json ws patch "run_${TAG}_$w" --expected-seq "$seq" --file - 2>/dev/null) \
        && grep -q "\"seq\": $((seq + 1))," <<< "$out"; then
        seq=$((seq + 1)) acks=$((acks + 1))
      else
        fails=$((fails + 1))
      fi
    done
    echo "$acks $fails" > "$OUT/$w"
  ) &
done
wait
stop=$(date +%s.%N)
total=0 failed=0 wrong=0
for w in $(seq 1 "$W"); do
  read -r acks fails < "$OUT/$w"
  total=$((total + acks)) failed=$((failed + fails))
  final=$("$BIN" --store "$STORE" --json ws show "run_${TAG}_$w" | grep -o '"_update_seq": [0-9]*' | head -1 | grep -o '[0-9]*$')
  [ "$final" = "$acks" ] || wrong=$((wrong + 1))
done
secs=$(echo "$stop - $start" | bc)
echo "$TAG: $W writers, $total acknowledged in $secs s = $(echo "scale=1; $total / $secs" | bc)/s; retried $failed; runs whose seq differs from their acks: $wrong"
[ "$wrong" -eq 0 ]
