# Bulkhead: `make demo` runs a real audit against a sandbox it starts itself; `make test` runs the tests.
# Both install what they need (Debian packages when missing, npm ci when the lock file changed) and are
# safe to run twice.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

DEB_PACKAGES := postgresql redis-server nats-server dnsmasq nftables iproute2 openssl python3 procps
NPM_STAMP := node_modules/.bulkhead-npm-ci

.PHONY: help deps system-deps build demo test e2e typecheck bench clean

help:
	@echo "make demo   run an isolation audit against a local sandbox (prod Postgres, Redis, HTTPS, DNS)"
	@echo "make test   run the test suite against real servers the tests start themselves"
	@echo "make build  compile to dist/ so that 'npx bulkhead ...' works"
	@echo "make e2e    the end-to-end proof in network namespaces (root; also part of make test)"
	@echo "make bench  run the benchmarks under bench/ (root: sweep uses a network namespace)"

# Debian packages, installed only when one is missing (needs root, as on a fresh machine).
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(NPM_STAMP): package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: system-deps $(NPM_STAMP)

build: $(NPM_STAMP)
	npx tsc -p tsconfig.build.json

typecheck: $(NPM_STAMP)
	npx tsc -p tsconfig.json

demo: deps build
	bash demo/run.sh

# Prints the totals as the plain last line CI reads: "N passed, N failed".
export TOTALS := const r = JSON.parse(require("fs").readFileSync(".test-results.json", "utf8")); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed` + (r.numPendingTests ? `, $${r.numPendingTests} skipped` : ""))

test: deps typecheck build
	@rm -f .test-results.json
	@set +e; npx vitest run --reporter=default --reporter=json --outputFile.json=.test-results.json; status=$$?; set -e; \
	node -e "$$TOTALS" 2>/dev/null || echo "0 passed, 1 failed"; \
	rm -f .test-results.json; exit $$status

# End to end in network namespaces (test/e2e/): prod, staging, dev and mgmt behind an nftables router.
e2e: deps build
	@if [ "$$(id -u)" != 0 ]; then echo "error: make e2e needs root (network namespaces, nftables): sudo make e2e" >&2; exit 1; fi
	CI=true npx vitest run test/e2e/

bench: deps build
	node dist/bench/sweep.js
	node dist/bench/ingest.js
	node dist/bench/agent-rss.js
	node dist/bench/latency.js

clean:
	rm -rf dist .test-results.json
