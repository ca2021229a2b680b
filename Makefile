# exgate: `make run` starts the gateway with its defaults; `make test` runs
# the whole suite (what CI runs).
GO ?= go

.PHONY: run build test lint proto bench mutants install dist deb

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
PREFIX  ?= /usr/local

run:
	$(GO) run ./cmd/exgate

build:
	$(GO) build -o bin/exgate ./cmd/exgate

# Installs the binary (version stamped) and its bash completion.
install:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/exgate ./cmd/exgate
	install -D -m 0755 bin/exgate $(DESTDIR)$(PREFIX)/bin/exgate
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	bin/exgate completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/exgate

# Static linux/amd64 and linux/arm64 binaries with version, commit and date
# stamped in, and their SHA-256 sums, in dist/.
dist:
	rm -rf dist && mkdir -p dist
	for arch in amd64 arm64; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o dist/exgate-linux-$$arch ./cmd/exgate || exit 1; \
	done
	cd dist && sha256sum exgate-linux-* > SHA256SUMS

test:
	./scripts/test.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	./scripts/staticcheck.sh

# Regenerates exprotopb and nativepb from proto/*.proto (needs Debian's protoc).
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

# A .deb (dpkg-deb): binary, completion, /etc/exgate/exgate.yaml and a
# hardened systemd unit; in dist/.
deb:
	./scripts/deb.sh
