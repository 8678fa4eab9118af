# dfnydus: build, test, bench, fuzz, lint. `make help` lists the targets.
GO      ?= go
BIN     := bin/dfnydus
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 30s
PREFIX  ?= /usr/local

.PHONY: all build test test-unit test-e2e bench fuzz lint setup help clean demo bench-containers install cluster cluster-down bench-p2p

all: build

help:
	@echo "make setup     install system packages the tests need (root, Debian)"
	@echo "make build     build $(BIN)"
	@echo "make install   install dfnydus into PREFIX/bin ($(PREFIX)) with a nydusd symlink for nydus-snapshotter"
	@echo "make test      unit + end-to-end tests (what CI runs)"
	@echo "make bench     benchmarks with their same-run baselines"
	@echo "make bench-containers  real container starts: OCI/overlayfs vs dfnydus via nydus-snapshotter (docs/containers.md)"
	@echo "make cluster   a P2P cluster on this machine: Dragonfly scheduler + Redis + registry + seed + N=3 dfnydus peers (docs/p2p.md)"
	@echo "make cluster-down  stop it"
	@echo "make bench-p2p 8 peers in network namespaces, registry behind 100 Mbit/s: P2P on vs off (docs/p2p.md)"
	@echo "make fuzz      run every fuzz target for FUZZTIME ($(FUZZTIME)) each"
	@echo "make lint      gofmt + go vet"

setup:
	bash scripts/setup.sh
	bash scripts/tools.sh >/dev/null

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/dfnydus

test: setup build
	$(GO) test -race -count=1 -timeout 40m ./...

# dfnydus run as "nydusd" serves containerd's nydus-snapshotter (docs/containers.md).
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/dfnydus
	ln -sf dfnydus $(DESTDIR)$(PREFIX)/bin/nydusd

bench: build
	bash scripts/bench.sh

# Real container starts over a 100 Mbit/s link; writes docs/bench-containers.png (see docs/containers.md).
bench-containers: setup build
	DFNYDUS_BENCH_JSON=$(CURDIR)/bin/bench-containers.json $(GO) test -run '^$$' -bench BenchmarkContainerStart -benchtime=1x -timeout 120m ./test/containerd/
	cd test/containerd/ctrclient && $(GO) run ./benchplot -in $(CURDIR)/bin/bench-containers.json -out $(CURDIR)/docs/bench-containers.png

N ?= 3
cluster: setup build
	bash scripts/cluster.sh up $(N)

cluster-down:
	bash scripts/cluster.sh down

# The issue-5 figures: prints the table (also written to bin/p2p-report.txt).
bench-p2p: setup build
	DFNYDUS_P2P_REPORT=$(CURDIR)/bin/p2p-report.txt $(GO) test -v -count=1 -run 'TestP2P/eight' -timeout 40m ./test/p2p/ | grep -v '^\s*20[0-9][0-9]-'
	@cat bin/p2p-report.txt

fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

demo: setup build
	bash scripts/demo.sh

clean:
	rm -rf bin
