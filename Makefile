# line-agent: the two commands that matter are `make demo` and `make test`.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/line-agent/line-agent/agent.Version=$(VERSION)
export CGO_ENABLED := 0
BUF       := $(GO) tool -modfile=tools/go.mod buf

.PHONY: all build demo test fmt-check vet deps-check deadcode e2e-deps pg-note unit test-postgres cross proto proto-check bench chaos pkg clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/line-agent ./cmd/agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/line-relay ./cmd/relay
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/line-demo ./cmd/demo

# Relay + agent + simulated Messages on loopback in a temporary directory.
demo: build
	$(BIN)/line-demo --agent-bin $(BIN)/line-agent --relay-bin $(BIN)/line-relay

test: fmt-check vet deps-check deadcode unit test-postgres cross proto-check

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Nothing unreachable from the binaries and tests, except what
# tools/deadcode-keep.txt names with its reason (golang.org/x/tools' deadcode,
# pinned in tools/go.mod).
deadcode:
	@out=$$($(GO) tool -modfile=tools/go.mod deadcode -test ./...) || exit 1; \
	keep=$$(grep -v '^#' tools/deadcode-keep.txt | sed 's/ #.*//' | grep -v '^$$'); \
	left=$$(printf '%s\n' "$$out" | sed 's/:[0-9]*:[0-9]*: /: /' | grep -v -x -F -e "$$keep" | grep -v '^$$'); \
	if [ -n "$$left" ]; then echo "unreachable code (delete it, or name it with a reason in tools/deadcode-keep.txt):"; echo "$$left"; exit 1; fi; \
	echo "deadcode: nothing unreachable beyond tools/deadcode-keep.txt"

# The agent binary that runs on every Mac must link no relay code (the demo,
# which drives a relay, is cmd/demo). Tests of cmd/agent may import relay:
# they are not linked into the binary, and go list -deps without -test leaves
# them out.
deps-check:
	@deps=$$(GOOS=darwin GOARCH=arm64 $(GO) list -deps ./cmd/agent) || exit 1; \
	bad=$$(printf '%s\n' "$$deps" | grep /relay); \
	if [ -n "$$bad" ]; then \
	  echo "line-agent (darwin/arm64) links relay code; it must not. Packages:"; echo "$$bad"; \
	  echo "Find the import with: GOOS=darwin GOARCH=arm64 go list -f '{{.ImportPath}}: {{.Imports}}' -deps ./cmd/agent | grep /relay"; \
	  exit 1; \
	fi; echo "line-agent (darwin/arm64) links no relay code"

# The spectrum-ts end-to-end test (e2e/spectrum) needs the SDK at the exact
# versions of its package-lock.json; npm ci runs again when the lock changes.
# Without npm the test skips and says so (CI installs npm and fails instead).
E2E_LOCK := e2e/spectrum/node_modules/.package-lock.json
e2e-deps:
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "note: npm not found; the spectrum-ts end-to-end test will skip (CI runs it)"; \
	elif [ ! -f $(E2E_LOCK) ] || [ e2e/spectrum/package-lock.json -nt $(E2E_LOCK) ]; then \
	  cd e2e/spectrum && npm ci --ignore-scripts --no-audit --no-fund; \
	fi

# The relay's PostgreSQL store tests start a throwaway cluster of their own
# (pkg/pgtest) from PostgreSQL's binaries; without them those tests skip and
# say so under -v (CI installs PostgreSQL and fails instead).
pg-note:
	@if [ -z "$$PGTEST_BIN" ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "note: PostgreSQL not found; the relay's PostgreSQL store tests will skip (CI installs it and runs them)"; \
	fi

# -race needs cgo on linux/amd64.
unit: e2e-deps pg-note
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 12m ./...

# The relay package again, its end-to-end tests on PostgreSQL: with
# LINE_TEST_STORE=postgres every relay a test starts keeps its state in a
# database of the throwaway cluster (docs/scaling.md). make unit already
# ran the store tests on both backends.
test-postgres: pg-note
	LINE_TEST_STORE=postgres CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 6m ./relay/

# The fault-injection suite at the full figures (docs/reliability.md); make
# test runs each fault's short version. Prints the table at the end.
chaos:
	@tbl=$$(mktemp); trap 'rm -f $$tbl' EXIT; \
	LINE_CHAOS=full LINE_CHAOS_TABLE=$$tbl CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./chaos/; rc=$$?; \
	cat $$tbl; exit $$rc

cross:
	GOOS=linux  GOARCH=amd64 $(GO) build -o /dev/null ./...
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./...
	GOOS=darwin GOARCH=amd64 $(GO) build -o /dev/null ./...

# Regenerate proto/line/v1 and proto/photon/imessage/v1 (the platform API
# line-relay serves) with the pinned buf and plugins (tools/go.mod).
proto:
	$(BUF) lint
	$(BUF) generate

# Fails when a committed generated file under proto/ differs from what the
# pinned tools generate now, is missing, or no longer has a .proto behind it.
proto-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(BUF) lint; \
	sed 's#out: proto#out: '"$$tmp"'/out#' buf.gen.yaml > $$tmp/buf.gen.yaml; \
	$(BUF) generate --template $$tmp/buf.gen.yaml; \
	gen=$$(cd $$tmp/out && find . -name '*.pb.go' | sed 's#^\./##' | sort); \
	[ -n "$$gen" ] || { echo "buf generated no Go code"; exit 1; }; \
	for f in $$gen; do \
	  [ -f proto/$$f ] || { echo "proto/$$f is missing: run make proto"; exit 1; }; \
	  cmp -s $$tmp/out/$$f proto/$$f || { echo "proto/$$f is stale: run make proto"; exit 1; }; \
	done; \
	for f in $$(cd proto && find . -name '*.pb.go' | sed 's#^\./##'); do \
	  [ -f $$tmp/out/$$f ] || { echo "proto/$$f has no .proto behind it: delete it"; exit 1; }; \
	done; \
	echo "generated proto code is fresh ($$(echo $$gen | wc -w) files)"

bench:
	$(GO) run ./cmd/bench -go $(GO)

# The macOS installer package, bin/line-agent-VERSION.pkg: a universal
# binary at /usr/local/bin/line-agent, signed and notarized when
# APP_SIGN_IDENTITY, PKG_SIGN_IDENTITY and NOTARY_PROFILE are set
# (docs/operations.md, "Building the package"). Needs a Mac: elsewhere it
# says so and fails.
pkg:
	GO=$(GO) VERSION=$(VERSION) packaging/macos/build-pkg.sh

clean:
	rm -rf $(BIN)
