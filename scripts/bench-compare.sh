#!/usr/bin/env bash
# Regenerates the Mycel vs go-ds-crdt comparison in docs/BENCHMARKS.md
# (the text between the compare markers) and docs/bench-propagation.svg,
# from fresh runs of `mycel bench` and the go-ds-crdt harness in
# bench/peers, with the same flags. Results: bench/results/compare/*.jsonl.
#
#   scripts/bench-compare.sh            N = 3, 5; K = 1,000, 10,000
#   QUICK=1 scripts/bench-compare.sh    N = 3; K = 1,000 (a minute or two)
#
# Run it on a quiet machine: the figures are wall-clock times.
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench/results/compare
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
mkdir -p "$out"

go build -o "$bin/mycel" ./cmd/mycel
(cd bench/peers && go build -o "$bin/dscrdt-bench" .)

ns="3 5"
ks="1000 10000"
if [[ -n "${QUICK:-}" ]]; then ns=3; ks=1000; fi
workloads=single-writer,multi-writer,partition-heal,late-joiner
# Mycel runs with a mesh degree of 2: in clusters this small a mesh of 6
# covers every peer, and forwarding along it mostly makes duplicates.
# docs/BENCHMARKS.md also gives the default (mesh degree 6) and mesh
# degree 2 with flood publishing (writers also send to every peer).
mycel_flags=(--mesh-degree 2)

rm -f "$out"/*.jsonl
for n in $ns; do
	for k in $ks; do
		echo "== n=$n k=$k" >&2
		"$bin/mycel" bench "${mycel_flags[@]}" --workload "$workloads" -n "$n" -k "$k" --json "$out/mycel-n$n-k$k.jsonl"
		"$bin/mycel" bench --workload single-writer,multi-writer -n "$n" -k "$k" --json "$out/mycel-default-n$n-k$k.jsonl"
		"$bin/mycel" bench --mesh-degree 2 --flood-publish --workload single-writer,multi-writer -n "$n" -k "$k" --json "$out/mycel-d2flood-n$n-k$k.jsonl"
		"$bin/dscrdt-bench" --workload "$workloads" -n "$n" -k "$k" --json "$out/dscrdt-n$n-k$k.jsonl"
	done
done
# Sustained: 1,000 puts/s for 10 s. go-ds-crdt falls behind at this rate
# (its backlog drains for minutes), hence the longer timeout.
n=${ns##* }
"$bin/mycel" bench "${mycel_flags[@]}" --workload sustained -n "$n" --rate 1000 --duration 10s --json "$out/mycel-sustained.jsonl"
"$bin/dscrdt-bench" --workload sustained -n "$n" --rate 1000 --duration 10s --timeout 15m --json "$out/dscrdt-sustained.jsonl"

go run ./bench/report -doc docs/BENCHMARKS.md -svg docs/bench-propagation.svg \
	"$out"/mycel-n*.jsonl "$out"/mycel-sustained.jsonl "$out"/dscrdt-*.jsonl
echo "updated docs/BENCHMARKS.md and docs/bench-propagation.svg from $out" >&2
