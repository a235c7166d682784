#!/usr/bin/env bash
# Measures the daemon's HTTP put path with wrk (Debian package "wrk"): one
# mycel daemon on a temp data dir (Pebble, durable acknowledgements), 32
# connections of 100-byte PUTs to distinct keys for DURATION (default 20s).
#
#   scripts/http-bench.sh [CONNECTIONS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32}
dur=${2:-20s}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
tmp=$(mktemp -d)
go build -o "$tmp/mycel" ./cmd/mycel
"$tmp/mycel" daemon --data-dir "$tmp/data" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 \
	--namespace bench --log-level warn >"$tmp/out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
api=""
for _ in $(seq 100); do
	api=$(sed -n 's/^ *api: *//p' "$tmp/out" | head -1)
	[[ -n "$api" ]] && break
	sleep 0.1
done
[[ -n "$api" ]] || { cat "$tmp/out" >&2; echo "daemon did not start" >&2; exit 1; }
wrk -t 2 -c "$conns" -d "$dur" --latency -s scripts/wrk-put.lua "http://$api"
