#!/usr/bin/env bash
# The project's test command (README: "Set-up on a fresh machine").
# gofmt, go vet, the test suite with the race detector (the main module and
# bench/peers), then a short run of every fuzz target. Fails on the first
# problem.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt wants these files rewritten:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== other platforms (the library and CLI must build where users embed them)"
for goos in windows darwin; do
	GOOS=$goos go vet ./...
done

echo "== go test -race"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Not ./sim/: with Go 1.26.8 its synctest bubbles crash the race runtime
# itself (SIGSEGV in timer.maybeRunChan or synctest.Run) in 4 of 19 runs
# at two commits, one of them in CI; built with Go 1.27.3 it passed 8 of 8
# (too few to call it fixed there). It runs without
# the race detector below; the node, gossip and store code it drives runs
# under it here, in those packages' own tests.
go test -race -count=1 -timeout 20m -v $(go list ./... | grep -v '/mycel/sim$') >"$log" 2>&1 || status=$?
# bench/peers is its own module (go-ds-crdt, for the side-by-side
# benchmark): vetted and smoke-tested too, so the comparison keeps working.
if [ "$status" -eq 0 ]; then
	(cd bench/peers && go vet ./... && go test -race -count=1 -timeout 10m -v ./...) >>"$log" 2>&1 || status=$?
fi
grep -E '^(ok|FAIL|---|panic:|\s+--- FAIL)|^\S+_test\.go:' "$log" | grep -v -- '--- PASS' || true
passed=0
# count_or_fail adds the passes in $log to $passed; if $status is not 0 it
# prints the end of the log and the counts, and exits with it.
count_or_fail() {
	passed=$((passed + $(grep -cE '^\s*--- PASS:' "$log" || true)))
	if [ "$status" -ne 0 ]; then
		tail -n 200 "$log"
		# The output of each failed test, from its start to its end: its
		# messages are indented, so the summary above leaves them out, and
		# the tail is usually some other package's.
		for name in $(grep -oE '^--- FAIL: \S+' "$log" | awk '{print $3}' | sort -u); do
			echo "== output of $name"
			awk -v n="$name" '$0 == "=== RUN   " n {on = 1} on {print} on && index($0, "--- FAIL: " n " ") == 1 {on = 0}' "$log" | tail -n 100
		done
		echo "tests: $passed passed, $(grep -cE '^\s*--- FAIL:' "$log" || true) failed"
		exit "$status"
	fi
}
count_or_fail

echo "== without the race detector"
# The heal test's bug shows only when sessions overlap, which the race
# detector's slowdown makes rare. The simulator's package (see above),
# with its bundled scenarios and the gap-pull one, which skip under -race
# anyway (seven times slower there): every bundled scenario but the
# 1000-node one (MYCEL_SIM_LONG=1), the 100-node and soak ones included.
go test -count=1 -run '^TestHealFromManyPeersPullsOnce$' ./node/
status=0
go test -count=1 -timeout 20m -v ./sim/ >"$log" 2>&1 || status=$?
grep -E '^(ok|FAIL|---|panic:|\s+--- )|wall' "$log" || true
count_or_fail

echo "== fuzz (a few seconds per target)"
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report a spurious "context deadline exceeded" as the time runs out
# (golang/go#75804, fixed in Go 1.27). No minimization, to keep runs short.
fuzztime="${FUZZTIME:-10000x}"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "-- $pkg $target"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 0 "$pkg"
	done
done
echo "== all checks passed"
echo "tests: $passed passed, 0 failed" # any failure exited above
