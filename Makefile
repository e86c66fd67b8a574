# guestnet. Targets that need root say so; none touches the host's own
# network namespace (tests and the demo build their own namespaces).
# Go from PATH, else where the Go project installs it (sudo's secure_path
# drops /usr/local/go/bin, so `sudo make test` would not find it).
GO ?= $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go),$(error Go not found in PATH nor in /usr/local/go/bin: install it (https://go.dev/doc/install) or run make GO=/path/to/go))
PREFIX ?= /usr/local

.PHONY: build demo test unit e2e vm fuzz bench install

build:
	$(GO) build -o bin/guestnet ./cmd/guestnet

# root: a NAT + isolated lab in throwaway namespaces
demo:
	./demo.sh

# root: everything — unit tests, the e2e suite (namespaces, QEMU), short fuzz runs.
# GUESTNET_E2E_REQUIRED=1 turns "skipped: needs root/qemu" into a failure.
# Progress: gotestsum (a tool of its own module, tools/go.mod, pinned)
# prints each test as it ends; the e2e package alone runs for minutes.
GOTESTSUM = $(GO) tool -modfile=tools/go.mod gotestsum --format testname --
test:
	GUESTNET_E2E_REQUIRED=1 $(GOTESTSUM) -count=1 -timeout 45m ./...
	$(MAKE) fuzz

# no root needed
unit:
	$(GO) test -count=1 ./internal/...

# root
e2e:
	GUESTNET_E2E_REQUIRED=1 $(GO) test -count=1 -timeout 45m -v ./e2e/

# root: only the scenarios with real QEMU guests (kernel cached in /var/cache/guestnet-e2e)
vm:
	GUESTNET_E2E_REQUIRED=1 $(GO) test -count=1 -v -run 'TestVM' ./e2e/

# Minimizing a new input may take up to a minute by default, with no fuzzing
# meanwhile: 1s keeps a short run fuzzing (5x the executions here).
# Budgets are counts of executions, not durations: a duration's deadline
# races the workers still running at its end, and Go's coordinator then
# fails the run with a bare "context deadline exceeded" and no input
# (golang/go#75804; seen here on a loaded machine). Each count is about
# 10 s of fuzzing on the 2-core machine.
FUZZ_PARSE ?= 200000x
FUZZ_HANDLE ?= 40000x
FUZZ_POOL ?= 3000x
fuzz:
	$(GO) test ./internal/spec -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZ_PARSE) -fuzzminimizetime 1s
	$(GO) test ./internal/dhcp -run '^$$' -fuzz FuzzHandle -fuzztime $(FUZZ_HANDLE) -fuzzminimizetime 1s
	$(GO) test ./internal/dhcp -run '^$$' -fuzz FuzzPool -fuzztime $(FUZZ_POOL) -fuzzminimizetime 1s

# root: apply speed against the shell recipe, printed as a table
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/plan/
	$(GO) run ./bench/apply -guestnet bin/guestnet

install: build
	install -D -m 0755 bin/guestnet $(DESTDIR)$(PREFIX)/bin/guestnet
	install -D -m 0644 dist/guestnet.service $(DESTDIR)/etc/systemd/system/guestnet.service
	install -D -m 0644 dist/guestnet-serve.service $(DESTDIR)/etc/systemd/system/guestnet-serve.service
	install -d -m 0755 $(DESTDIR)/etc/guestnet
	install -d -m 0755 $(DESTDIR)/usr/share/bash-completion/completions
	bin/guestnet completion bash > $(DESTDIR)/usr/share/bash-completion/completions/guestnet
