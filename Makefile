# exgate: `make run` starts the gateway with its defaults; `make test` runs
# the whole suite (what CI runs).
GO ?= go

.PHONY: run build test lint proto bench mutants

run:
	$(GO) run ./cmd/exgate

build:
	$(GO) build -o bin/exgate ./cmd/exgate

test:
	./scripts/test.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

# Regenerates exprotopb from proto/exproto.proto (needs Debian's protoc).
proto:
	./scripts/gen-proto.sh

# The benchmark suite: exgate, its handlers and the baselines on loopback;
# writes bench/results/<date>.json and .md (a few minutes on 2 cores).
bench:
	./scripts/deps.sh
	$(GO) build -o bin/exgate ./cmd/exgate
	$(GO) build -o bin/jsondemo ./examples/jsondemo
	./bin/exgate bench suite --handler-bin bin/jsondemo --out bench/results
	$(GO) test -run '^$$' -bench . -benchmem ./internal/channel ./internal/listener ./internal/adapter

# Mutation check: small deliberate bugs (scripts/mutants.txt) applied one by
# one to a copy of the tree; fails if the tests let any of them through.
mutants:
	./scripts/mutants.sh
