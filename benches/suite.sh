#!/bin/sh
# The standard benchmark suite behind `make bench`: load workloads with
# flotilla-bench (JSON, SVG plot and printed table per run, plus a markdown
# summary) and the transport micro-benchmark, into one folder.
#
#   benches/suite.sh FLOTILLA_BENCH BENCH_TRANSPORT OUT_DIR
#
# BENCH_SECONDS (default 25) and BENCH_WARMUP (default 5) set each load
# run's measured and warm-up seconds; BENCH_CLIENTS (256), BENCH_RANGES
# (64), BENCH_VALUE (256) and BENCH_RECORDS (100000) the shared settings.
set -eu
BIN=$1
TRANSPORT=$2
OUT=$3
SECS=${BENCH_SECONDS:-25}
WARMUP=${BENCH_WARMUP:-5}
CLIENTS=${BENCH_CLIENTS:-256}
RANGES=${BENCH_RANGES:-64}
VALUE=${BENCH_VALUE:-256}
RECORDS=${BENCH_RECORDS:-100000}
mkdir -p "$OUT"
runs=""

run() {
    name=$1
    shift
    echo "== $name"
    "$BIN" "$@" --concurrency "$CLIENTS" --ranges "$RANGES" --value-size "$VALUE" \
        --records "$RECORDS" --duration "$SECS" --warmup "$WARMUP" --seed 1 \
        --json "$OUT/$name.json" --plot "$OUT/$name.svg" > "$OUT/$name.txt"
    cat "$OUT/$name.txt"
    runs="$runs $OUT/$name.json"
}

run embedded-write-only --target embedded --workload write-only
run embedded-ycsb-a --target embedded --workload a
run embedded-ycsb-c --target embedded --workload c
run cluster-write-only --target cluster --workload write-only
run cluster-ycsb-a --target cluster --workload a
run cluster-ycsb-c --target cluster --workload c

echo "== transport micro-benchmark"
"$TRANSPORT" > "$OUT/transport.txt"
cat "$OUT/transport.txt"

# shellcheck disable=SC2086 # word splitting of the file list is intended
"$BIN" summarize $runs > "$OUT/results.md"
echo "== summary ($OUT/results.md)"
cat "$OUT/results.md"
