#!/usr/bin/env bash
# Instructions per acquire+release cycle, counted by callgrind (stable on a noisy,
# shared machine, unlike times): each variant of examples/cycle_cost.rs runs at two
# cycle counts and the difference is divided by the extra cycles, cancelling setup.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --example cycle_cost
bin=target/release/examples/cycle_cost
count() { # $1 variant, $2 cycles -> total instructions (Ir)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
small=100000
large=300000
printf '%-14s %11s\n' variant 'instr/cycle'
for v in floor opool lockfree rust rust-blocking rust-reset c c-site; do
    a=$(count "$v" "$small")
    b=$(count "$v" "$large")
    printf '%-14s %11.1f\n' "$v" "$(echo "($b - $a) / ($large - $small)" | bc -l)"
done
