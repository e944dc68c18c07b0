# ipsyncd — see README.md. `make demo` shows the main job; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/ipsyncd
FIXTURES := pcap-fixtures
APT_PKGS := dnsmasq-base dhcpcd-base tcpdump iproute2 arping kea-dhcp4-server

.PHONY: all build test deps demo bench fuzz-smoke golden fixtures clean netns-test deb deb-test docs

all: build

build:
	$(CARGO) build --release --locked

# Installs the Debian peers the namespace tests use, when missing and when we may (root).
# kea-dhcp4-server ships a systemd unit: while installing, a policy-rc.d that answers 101
# (when there is none already) keeps every package from starting a host service; the tests
# run their own Kea in a namespace with private files (tests/it/lab.rs `Kea`).
deps:
	@missing=""; \
	command -v dnsmasq >/dev/null || missing="$$missing dnsmasq-base"; \
	command -v dhcpcd  >/dev/null || missing="$$missing dhcpcd-base"; \
	command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
	command -v ip      >/dev/null || missing="$$missing iproute2"; \
	command -v arping  >/dev/null || missing="$$missing arping"; \
	command -v kea-dhcp4 >/dev/null || [ -x /usr/sbin/kea-dhcp4 ] || missing="$$missing kea-dhcp4-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    policy=""; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf '#!/bin/sh\n# make deps: start no service while installing\nexit 101\n' > /usr/sbin/policy-rc.d; \
	      chmod 755 /usr/sbin/policy-rc.d; policy=1; \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
	    if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	    exit $$rc; \
	  else echo "not root: namespace tests will be skipped (missing:$$missing)"; fi; \
	fi

# Root-only tests are #[ignore = "needs root"]: as root they run (--include-ignored), otherwise
# they show as ignored instead of passing having done nothing. RUST_TEST_THREADS still applies.
ROOT_TEST_ARGS := $(if $(filter 0,$(shell id -u)),-- --include-ignored,)

test: deps
	$(CARGO) test --release --locked --lib --bins --tests --examples $(ROOT_TEST_ARGS)
	$(CARGO) bench --locked --no-run  # benches must build; they run in make bench only
	$(MAKE) --no-print-directory netns-test
	$(MAKE) --no-print-directory deb-test

# Live tests in network namespaces (root only; each removes what it made, even on failure).
netns-test: build
	@if [ "$$(id -u)" != 0 ]; then echo "netns-test: SKIP (needs root)"; exit 0; fi; \
	bash tests/netns/real-peers-test.sh $(BIN) && \
	bash tests/netns/dhcpcd-interop-test.sh $(BIN)

# The Debian package (cargo-deb; see [package.metadata.deb] in Cargo.toml). cargo-deb is
# installed when missing (as the pinned version, a few minutes once). The assets are the release
# binary and what `docs` renders into target/assets/; the .deb's path is the last line printed.
CARGO_DEB_VERSION := 3.8.0
ASSETS := target/assets

docs:
	$(CARGO) run --release --locked --example gendocs -- $(ASSETS) >/dev/null

deb: build docs
	@if ! $(CARGO) deb --version 2>/dev/null | grep -qx 'cargo-deb $(CARGO_DEB_VERSION)'; then \
	  echo "installing cargo-deb $(CARGO_DEB_VERSION)"; \
	  $(CARGO) install --locked cargo-deb --version $(CARGO_DEB_VERSION); \
	fi
	@$(CARGO) deb --no-build --locked --strip --quiet

# Builds the package and checks every file, mode, man page, the unit's hardening and its
# exposure score (tests/deb-test.sh; prints "deb-test: SKIP (reason)" when it cannot run).
deb-test:
	@bash tests/deb-test.sh

demo: build
	@bash tests/demo.sh $(BIN)

bench:
	@bash benches/run.sh

fuzz-smoke:
	@bash fuzz/smoke.sh $${FUZZ_SECONDS:-30}

# Regenerates crafted fixture captures (bit-for-bit reproducible).
fixtures:
	$(CARGO) run --release --example mkfixtures -- $(FIXTURES)

# Writes NAME.expected.jsonl.new beside each golden for a PERSON to review and rename.
# Never copy these over the goldens without reading the diff.
golden: build
	@for cfg in $(FIXTURES)/*.toml; do \
	  n=$${cfg%.toml}; p=$$n.pcap; [ -f $$p ] || p=$$n.pcapng; \
	  $(BIN) replay $$p --config $$cfg > $$n.expected.jsonl.new 2>/dev/null; \
	  if [ -f $$n.expected.jsonl ] && cmp -s $$n.expected.jsonl $$n.expected.jsonl.new; then rm $$n.expected.jsonl.new; \
	  else echo "review: $$n.expected.jsonl.new"; fi; \
	done

clean:
	$(CARGO) clean
