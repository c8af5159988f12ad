#!/bin/sh
# The engine issue's measurement table: write-only puts/s, p50 and p99 by
# target (embedded, 3-node cluster) x ranges (1, 64, 1024) x writers (1, 64,
# 256), and the batching factor (entries applied per WAL fsync). Prints a
# markdown table; the JSON of each run stays in $OUT (default a temp dir).
#
#   sh benches/engine-matrix.sh [FLOTILLA_BENCH] [OUT_DIR]
#
# MATRIX_SECONDS (default 6) sets each run's measured seconds.
set -eu
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/flotilla-target}/release/flotilla-bench}
OUT=${2:-$(mktemp -d)}
SECS=${MATRIX_SECONDS:-6}
mkdir -p "$OUT"
for target in embedded cluster; do
  for ranges in 1 64 1024; do
    for conc in 1 64 256; do
      "$BIN" --target $target --workload write-only --concurrency $conc --ranges $ranges \
        --value-size 256 --records 100000 --duration "$SECS" --warmup 1 --seed 1 \
        --wal-limit off --json "$OUT/$target-$ranges-$conc.json" \
        > "$OUT/$target-$ranges-$conc.log" 2>&1 || echo "run $target $ranges $conc failed" >&2
    done
  done
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("| target | ranges | writers | puts/s | p50 ms | p99 ms | entries per fsync |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for target in ["embedded", "cluster"]:
    for ranges in [1, 64, 1024]:
        for conc in [1, 64, 256]:
            try:
                d = json.load(open(f"{out}/{target}-{ranges}-{conc}.json"))
            except (OSError, ValueError):
                print(f"| {target} | {ranges} | {conc} | failed | | | |")
                continue
            op = [o for o in d["ops"] if o["op"] == "update"][0]
            applied = sum(n["entries_applied"] for n in d["nodes"])
            fsyncs = sum(n["wal_fsyncs"] for n in d["nodes"])
            print(f"| {target} | {ranges} | {conc} | {d['summary']['ops_per_sec']:,.0f} | "
                  f"{op['p50_us'] / 1e3:.2f} | {op['p99_us'] / 1e3:.2f} | {applied / max(fsyncs, 1):.1f} |")
PY
