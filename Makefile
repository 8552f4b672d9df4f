# sundown — developer tasks. CI runs .ci/run; these are for people.

.PHONY: bench bench-shutdown build man completions deb deb-test

# Packaging. VERSION is the git tag (v1.2.3, or v1.2.3-4-gabc between
# tags); SOURCE_DATE_EPOCH (the last commit's time) stamps the man pages
# and the package's files, so the same commit builds the same .deb.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
GOARCH ?= $(shell go env GOARCH)
BUILD := dist/build
LDFLAGS := -s -w -X github.com/sundown-ups/sundown/internal/cli.Version=$(VERSION)
# dist/deb is its own module (nfpm, cobra/doc stay out of the daemon's).
DEBMOD := cd dist/deb && GOFLAGS=-mod=mod

# bench measures sundown against the real NUT peers (needs nut-server and
# nut-client installed; about 5 minutes) and runs the ordered-shutdown
# benchmarks (about 1 more minute), and rewrites docs/BENCHMARKS.md.
bench:
	SUNDOWN_WRITE_DOCS=1 go test ./bench -run 'TestDecisionParity' -count=1 && SUNDOWN_WRITE_DOCS=1 go test ./bench -run '^$$' -bench . -benchtime 1x -count=1

# bench-shutdown runs only the ordered-shutdown benchmarks (1,000 VMs on the
# vCenter simulator in real time, 10,000 on the fake provider in virtual
# time; about 1 minute, no peer to install) and rewrites their sections of
# docs/BENCHMARKS.md.
bench-shutdown:
	SUNDOWN_WRITE_DOCS=1 go test ./bench -run '^$$' -bench 'Shutdown' -benchtime 1x -count=1

# build writes a static, path-free binary with its version to dist/build/sundown.
build:
	mkdir -p $(BUILD)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/sundown ./cmd/sundown

# completions asks the binary for its bash, zsh and fish completions.
completions: build
	mkdir -p $(BUILD)/completions
	$(BUILD)/sundown completion bash > $(BUILD)/completions/sundown.bash
	$(BUILD)/sundown completion zsh > $(BUILD)/completions/_sundown
	$(BUILD)/sundown completion fish > $(BUILD)/completions/sundown.fish

# man writes one man page per command to dist/build/man.
man:
	rm -rf $(BUILD)/man
	$(DEBMOD) go run ./cmd/sundown-man -out ../../$(BUILD)/man -version $(VERSION)

# deb builds dist/build/sundown_VERSION_ARCH.deb (no dpkg tools needed).
deb: build man completions
	$(DEBMOD) go run ./cmd/sundown-deb -root ../.. -binary ../../$(BUILD)/sundown \
		-version $(VERSION) -arch $(GOARCH) -man ../../$(BUILD)/man \
		-completions ../../$(BUILD)/completions -out ../../$(BUILD)

# deb-test builds a package from this tree and inspects it with dpkg-deb
# (about a minute with a cold build cache).
deb-test:
	$(DEBMOD) go test -count=1 ./...
