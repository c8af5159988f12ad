#!/bin/sh
# The engine issue's measurement table: write-only puts/s, p50 and p99 by
# target (embedded, 3-node cluster) x ranges (1, 64, 1024) x writers (1, 64,
# 256), and the batching factor (entries applied per WAL fsync). Prints a
# markdown table; the JSON of each run stays in $OUT (default a temp dir).
#
#   sh benches/engine-matrix.sh [FLOTILLA_BENCH] [OUT_DIR]
#
# MATRIX_SECONDS (default 6) sets each run's measured seconds.
# MATRIX_REPEATS (default 1) runs the whole matrix that many times, one
# pass after the other, so repeats of a cell are minutes apart; the table
# then shows the median run of each cell and the range of puts/s. On a
# shared machine whose speed drifts by +-15%, use 3 or more before
# comparing two builds.
set -eu
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/flotilla-target}/release/flotilla-bench}
OUT=${2:-$(mktemp -d)}
SECS=${MATRIX_SECONDS:-6}
REPEATS=${MATRIX_REPEATS:-1}
mkdir -p "$OUT"
pass=1
while [ "$pass" -le "$REPEATS" ]; do
  for target in embedded cluster; do
    for ranges in 1 64 1024; do
      for conc in 1 64 256; do
        run="$OUT/$target-$ranges-$conc-$pass"
        "$BIN" --target $target --workload write-only --concurrency $conc --ranges $ranges \
          --value-size 256 --records 100000 --duration "$SECS" --warmup 1 --seed 1 \
          --wal-limit off --json "$run.json" > "$run.log" 2>&1 \
          || echo "run $target $ranges $conc (pass $pass) failed" >&2
      done
    done
  done
  pass=$((pass + 1))
done
python3 - "$OUT" "$REPEATS" <<'PY'
import json, sys
out, repeats = sys.argv[1], int(sys.argv[2])
print("| target | ranges | writers | puts/s | p50 ms | p99 ms | entries per fsync |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for target in ["embedded", "cluster"]:
    for ranges in [1, 64, 1024]:
        for conc in [1, 64, 256]:
            runs = []
            for p in range(1, repeats + 1):
                try:
                    runs.append(json.load(open(f"{out}/{target}-{ranges}-{conc}-{p}.json")))
                except (OSError, ValueError):
                    pass
            if not runs:
                print(f"| {target} | {ranges} | {conc} | failed | | | |")
                continue
            runs.sort(key=lambda d: d["summary"]["ops_per_sec"])
            d = runs[len(runs) // 2]
            rate = f"{d['summary']['ops_per_sec']:,.0f}"
            if len(runs) > 1:
                rate += (f" ({runs[0]['summary']['ops_per_sec']:,.0f}–"
                         f"{runs[-1]['summary']['ops_per_sec']:,.0f})")
            op = [o for o in d["ops"] if o["op"] == "update"][0]
            applied = sum(n["entries_applied"] for n in d["nodes"])
            fsyncs = sum(n["wal_fsyncs"] for n in d["nodes"])
            print(f"| {target} | {ranges} | {conc} | {rate} | "
                  f"{op['p50_us'] / 1e3:.2f} | {op['p99_us'] / 1e3:.2f} | {applied / max(fsyncs, 1):.1f} |")
PY
