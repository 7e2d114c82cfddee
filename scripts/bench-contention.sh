#!/usr/bin/env bash
# One prepared benchmark run: single-thread peers, contention (throughput + latency and
# fairness) at 1, 2, 4, 8 threads (and 16 where there are 16+ cores), async, memory,
# with short criterion settings, everything collected under one folder.
#
#   scripts/bench-contention.sh [OUT_DIR]                  build with cargo, then run
#   scripts/bench-contention.sh --stage [BIN_DIR]          build here, copy stripped bench
#                                                          binaries to BIN_DIR (default
#                                                          target/heliosdb-bench/bin), stop
#   scripts/bench-contention.sh --prebuilt BIN_DIR [OUT_DIR]
#                                                          run staged binaries (no cargo
#                                                          needed: for a machine without
#                                                          network or toolchain)
#
# OUT_DIR defaults to target/heliosdb-bench/run-<UTC date>. It receives: machine.txt
# (date, lscpu, nproc, kernel, toolchain), <bench>.log for each bench, latency.json and
# latency.csv, memory.json, criterion.tar.gz (criterion's raw output), and, when
# python3 is there, tables.md (Markdown tables of every result) and throughput.svg.
#
# Settings (environment): WARMUP (s, default 0.5), MEASURE (s, default 1),
# HELIOSDB_BENCH_THREADS (default 1,2,4,8 plus 16 on 16+ cores),
# HELIOSDB_BENCH_LATENCY_MS (default 600). About 4 minutes on 16 cores with the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCHES=(hot_path peers contention async_acquire memory sweeper)
# The C-ABI overhead bench joins when it exists.
[[ -f "$ROOT/benches/ffi_overhead.rs" ]] && BENCHES+=(ffi_overhead)
WARMUP="${WARMUP:-0.5}"
MEASURE="${MEASURE:-1}"

build_binaries() { # $1: folder to copy the bench executables into
    local dest="$1"
    mkdir -p "$dest"
    local args=()
    for b in "${BENCHES[@]}"; do args+=(--bench "$b"); done
    cargo bench --no-run --message-format=json "${args[@]}" 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        cp "$exe" "$dest/$name"
        strip "$dest/$name" 2>/dev/null || true
    done
    for b in "${BENCHES[@]}"; do
        [[ -x "$dest/$b" ]] || { echo "missing bench binary $dest/$b" >&2; exit 1; }
    done
}

PREBUILT=""
case "${1:-}" in
--stage)
    dest="${2:-target/heliosdb-bench/bin}"
    build_binaries "$dest"
    du -sh "$dest"
    echo "staged: ${BENCHES[*]} in $dest"
    exit 0
    ;;
--prebuilt)
    PREBUILT="$(cd "${2:?--prebuilt needs a folder}" && pwd)"
    shift 2
    ;;
esac

OUT="${1:-target/heliosdb-bench/run-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BIN="$PREBUILT"
if [[ -z "$BIN" ]]; then
    BIN="$OUT/bin"
    build_binaries "$BIN"
fi

export CRITERION_HOME="$OUT/criterion"
export HELIOSDB_BENCH_OUT="$OUT"
START=$(date +%s)

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -srm)"
    echo "rustc: $(rustc -V 2>/dev/null || echo 'n/a (prebuilt binaries)')"
    echo "settings: WARMUP=$WARMUP MEASURE=$MEASURE HELIOSDB_BENCH_THREADS=${HELIOSDB_BENCH_THREADS:-default} HELIOSDB_BENCH_LATENCY_MS=${HELIOSDB_BENCH_LATENCY_MS:-600}"
    echo
    lscpu 2>/dev/null || cat /proc/cpuinfo
    echo
    free -m 2>/dev/null || true
} >"$OUT/machine.txt"

run() { # $1: bench name, rest: its arguments
    local name="$1"
    shift
    echo "== $name ($(($(date +%s) - START)) s)"
    "$BIN/$name" --bench "$@" 2>&1 | tee "$OUT/$name.log" | grep -E '^(hot_path|sweep|peers|contention|async|latency|ffi|  ) *|time:|thrpt:|^ *[0-9]+ ' | head -400 || true
}

CRIT=(--warm-up-time "$WARMUP" --measurement-time "$MEASURE" --noplot)
run hot_path "${CRIT[@]}"
[[ -x "$BIN/ffi_overhead" ]] && run ffi_overhead "${CRIT[@]}"
run sweeper "${CRIT[@]}"
run memory
run peers "${CRIT[@]}"
run async_acquire "${CRIT[@]}"
run contention "${CRIT[@]}"

tar -czf "$OUT/criterion.tar.gz" -C "$OUT" criterion
if command -v python3 >/dev/null; then
    python3 "$ROOT/scripts/bench-plot.py" --criterion "$OUT/criterion" \
        --out "$OUT/throughput.svg" --tables "$OUT/tables.md" --latency "$OUT/latency.json" || true
fi
rm -rf "$OUT/criterion"
[[ -n "$PREBUILT" ]] || rm -rf "$OUT/bin"
echo "done in $(($(date +%s) - START)) s; results in $OUT"
ls -la "$OUT"
