#!/usr/bin/env bash
# Decode speed of two expertd builds on the same model, measured in one run:
# the two decode_bench binaries take turns (A B A B ...) so that the noise of
# this machine falls on both alike, and the ratio of their medians is
# printed.
#   bench/compare_decode.sh BEFORE_DECODE_BENCH AFTER_DECODE_BENCH [ROUNDS] [-- decode_bench args]
# e.g. before and after a refactor:
#   git worktree add /tmp/before <commit>; scripts/build /tmp/before/build
#   bench/compare_decode.sh /tmp/before/build/bench/decode_bench build/bench/decode_bench 5 -- --model /tmp/expertd-bench-olmoe --tokens 64
set -euo pipefail
before="$1"
after="$2"
rounds="${3:-5}"
shift $(( $# >= 3 ? 3 : 2 ))
[[ "${1:-}" == "--" ]] && shift
args=("$@")
# One model for both: the first run generates it (the default bench model).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

decode_rate() {  # prints the decode tokens/s of one run
  "$1" "${args[@]}" | sed -n 's/^decode: \([0-9.]*\) tokens\/s.*/\1/p'
}
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

decode_rate "$after" >/dev/null  # warm-up: the model is generated and in the page cache
for ((i = 0; i < rounds; ++i)); do
  decode_rate "$before" >> "$work/before"
  decode_rate "$after" >> "$work/after"
done
b="$(median < "$work/before")"
a="$(median < "$work/after")"
echo "before: $(tr '\n' ' ' < "$work/before")tokens/s (median $b)"
echo "after:  $(tr '\n' ' ' < "$work/after")tokens/s (median $a)"
awk -v a="$a" -v b="$b" 'BEGIN {printf "after / before: %.3f\n", a / b}'
