#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, vet, staticcheck, then
# every test with the race detector. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
./scripts/staticcheck.sh
# -json through testsum: one line per package, every skip with its reason,
# the whole output of every failure; the raw log is kept (its own file, so
# parallel runs do not collide).
tmp=$(mktemp -d -t exgate-test.XXXXXX)
go build -o "$tmp/testsum" ./scripts/testsum
echo "raw go test -json log: $tmp/test.json"
go test -race -count=1 -timeout 15m -json ./... 2>&1 | tee "$tmp/test.json" | "$tmp/testsum"
# The race detector makes sync.Pool drop items, so allocation counts are
# checked only without it: those tests run once more here.
go test -count=1 -run 'AllocateNothing$' ./internal/netpoll
