# dfnydus: build, test, bench, fuzz, lint. `make help` lists the targets.
GO      ?= go
BIN     := bin/dfnydus
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 30s
PREFIX  ?= /usr/local

.PHONY: all build test test-unit test-e2e bench fuzz lint setup setup-demo help clean demo bench-containers install cluster cluster-down bench-p2p bench-p2p-large

all: build

help:
	@echo "make setup     install system packages the tests need (root, Debian)"
	@echo "make demo     convert a sample image, mount it lazily, run a program from it (installs only what it needs)"
	@echo "make build     build $(BIN)"
	@echo "make install   install dfnydus into PREFIX/bin ($(PREFIX)) with a nydusd symlink for nydus-snapshotter"
	@echo "make test      unit + end-to-end tests (what CI runs)"
	@echo "make bench     benchmarks with their same-run baselines"
	@echo "make bench-containers  real container starts: OCI/overlayfs vs dfnydus via nydus-snapshotter (docs/containers.md)"
	@echo "make cluster   a P2P cluster on this machine: Dragonfly scheduler + Redis + registry + seed + N=3 dfnydus peers (docs/p2p.md)"
	@echo "make cluster-down  stop it"
	@echo "make bench-p2p P2P scenarios a-g on a 400 MB real-file image (Debian + Go), peers in network namespaces,"
	@echo "              registry behind 100 Mbit/s: alone vs 8 peers with and without P2P, 64-peer start, scheduler"
	@echo "              outage, forced piece lengths; table in bin/p2p-report.txt (docs/p2p.md; ~40 min, quiet machine)"
	@echo "make bench-p2p-large  scenario h: a 9.2 GB blob (32 MiB pieces) read by 2 peers over P2P, unshaped link;"
	@echo "              needs 50 GB free in /var/tmp; table in bin/p2p-large-report.txt"
	@echo "make fuzz      run every fuzz target for FUZZTIME ($(FUZZTIME)) each"
	@echo "make lint      gofmt + go vet"

setup:
	bash scripts/setup.sh
	bash scripts/tools.sh >/dev/null

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/dfnydus

# The tools module (tools/: the scheduler's pin and the check of our ids against its own) is a
# module of its own, which ./... does not reach.
test: setup build
	$(GO) test -race -count=1 -timeout 40m ./...
	cd tools && $(GO) test -race -count=1 ./...

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

# P2P scenarios a-g at full size (TestP2PBench): prints the table, also written to bin/p2p-report.txt.
bench-p2p: setup build
	DFNYDUS_BENCH_P2P=1 DFNYDUS_P2P_REPORT=$(CURDIR)/bin/p2p-report.txt $(GO) test -v -count=1 -run '^TestP2PBench$$' -timeout 75m ./test/p2p/ | grep -v '^\s*20[0-9][0-9]-'
	@cat bin/p2p-report.txt

# P2P scenario h (TestP2PLarge): one blob over 8.4 GB; table in bin/p2p-large-report.txt.
bench-p2p-large: setup build
	DFNYDUS_BENCH_P2P_LARGE=1 DFNYDUS_P2P_REPORT=$(CURDIR)/bin/p2p-large-report.txt $(GO) test -v -count=1 -run '^TestP2PLarge$$' -timeout 120m ./test/p2p/ | grep -v '^\s*20[0-9][0-9]-'
	@cat bin/p2p-large-report.txt

fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	cd tools && $(GO) vet ./...

# Only what the demo runs: its few apt packages and bin/dfnydus, not the test tools (scheduler,
# versitygw, nydus-snapshotter: minutes of builds). The closing total counts from make's start.
setup-demo:
	bash scripts/setup.sh demo

demo: DEMO_START := $(shell date +%s.%N)
demo: setup-demo build
	DFNYDUS_DEMO_START=$(DEMO_START) bash scripts/demo.sh

clean:
	rm -rf bin
