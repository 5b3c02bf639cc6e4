# Go modules of the workspace, as go.work lists them (relative to this
# directory): ./... stops at module boundaries, so every target walks this
# list.
MODULES := $(patsubst $(CURDIR)/%,%,$(shell go list -m -f '{{.Dir}}' 2>/dev/null))
# Stops a recipe whose loop would otherwise walk nothing and pass.
need-modules = test -n "$(MODULES)" || { echo "no Go modules: \`go list -m\` failed here (needs Go 1.26, run from the repository)"; exit 1; }

# staticcheck at a pinned version; its checks are in staticcheck.conf.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Extra flags for every go command, e.g. `make test GOFLAGS=-race`.
GOFLAGS ?=
export GOFLAGS

TEST_TIMEOUT ?= 15m
# Tenants of `make load`.
TENANTS ?= 1000
BENCH_FLAGS ?=
# Tests that own their servers run side by side; most of their time is
# spent waiting on Postgres and NATS, not on the two cores.
TEST_PARALLEL ?= 8
RACE_TIMEOUT ?= 30m

# What the tests need, found, started or installed before they run: a
# Postgres (libs/cmd/ensurepg) and an nginx for the ingress test
# (libs/cmd/ensurenginx). Each stops with one line saying what is missing;
# they are built rather than run with go run, which would add a line of its
# own ("exit status 1").
TEST_SETUP = $(need-modules); \
	go build -o .local/bin/ ./libs/cmd/ensurepg ./libs/cmd/ensurenginx || exit 1; \
	dsn=$$(.local/bin/ensurepg) || exit 1; \
	nginx=$$(.local/bin/ensurenginx) || exit 1; \
	export DATABASE_URL="$$dsn" TEST_DATABASE_URL="$$dsn" NGINX_BIN="$$nginx"

.DEFAULT_GOAL := help
.PHONY: help lint test test-race fuzz run build fmt vet bench load subscribe

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

lint: ## gofmt, go vet, staticcheck and importcheck (no test helper in non-test code) on every module
	@$(need-modules); \
	failed=; \
	echo "==> gofmt -l"; \
	unformatted=$$(gofmt -l $(MODULES)) || failed=" gofmt"; \
	if [ -n "$$unformatted" ]; then echo "$$unformatted"; echo "(make fmt formats them)"; failed=" gofmt"; fi; \
	for m in $(MODULES); do \
		echo "==> $$m: go vet, staticcheck, importcheck"; \
		(cd $$m && go vet ./...) || failed="$$failed $$m:vet"; \
		(cd $$m && go run $(STATICCHECK) ./...) || failed="$$failed $$m:staticcheck"; \
		(cd $$m && go run tenantbase/libs/cmd/importcheck ./...) || failed="$$failed $$m:importcheck"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi; \
	echo "lint passed"

test: lint ## Lint, then vet and test every module against a real Postgres and nginx
	@$(TEST_SETUP); \
	for m in $(MODULES); do \
		echo "==> $$m: go test"; \
		(cd $$m && go test -count=1 -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./...) || { echo "FAILED: go test in $$m"; exit 1; }; \
	done; \
	echo "all modules passed"

test-race: ## The tests of every module with the race detector, set up as make test
	@$(TEST_SETUP); \
	for m in $(MODULES); do \
		echo "==> $$m: go test -race"; \
		(cd $$m && go test -race -count=1 -timeout $(RACE_TIMEOUT) ./...) || { echo "FAILED: go test -race in $$m"; exit 1; }; \
	done; \
	echo "all modules passed with -race"

# Every fuzz target, as module:package:target. `make test` runs each one's
# seed corpus (testdata/fuzz and f.Add) as an ordinary test; `make fuzz`
# searches for FUZZTIME per target on top. FUZZTIME is a count of inputs
# (Nx), not a duration: with a duration, Go's fuzz coordinator up to 1.26
# can report its own stop as a failure, "context deadline exceeded"
# (golang/go#75804), which a loaded machine hits.
FUZZ_TARGETS := \
	libs:./events:FuzzDecode \
	libs:./auth:FuzzParse \
	services/tenant-plane:./internal/tenants:FuzzParseID \
	services/tenant-plane:./app:FuzzRequestBodies \
	services/tenant-plane:./app:FuzzTenantHeaderAndToken \
	services/control-plane:./app:FuzzRequestBodies \
	services/control-plane:./app:FuzzBearerTokens
FUZZTIME ?= 2000x

fuzz: ## Fuzz every target for FUZZTIME inputs (2000x): X-TENANT, request bodies through both routers, tokens, events
	@$(TEST_SETUP); \
	for t in $(FUZZ_TARGETS); do \
		m=$${t%%:*}; rest=$${t#*:}; pkg=$${rest%%:*}; target=$${rest#*:}; \
		echo "==> $$m $$pkg $$target"; \
		(cd $$m && go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg) || { echo "FAILED: fuzz $$target in $$m/$$pkg"; exit 1; }; \
	done; \
	echo "fuzzing found nothing"

run: ## Start the whole system locally (both services, NATS, Postgres, ingress on :8000)
	@mkdir -p .local/bin
	@go build -o .local/bin/devstack ./deploy/cmd/devstack
	@exec .local/bin/devstack

build: ## Build both services and the admin command line tenantctl into ./bin
	@mkdir -p bin
	cd services/control-plane && go build -o ../../bin/control-plane .
	cd services/control-plane && go build -o ../../bin/tenantctl ./cmd/tenantctl
	cd services/tenant-plane && go build -o ../../bin/tenant-plane .

fmt: ## gofmt every module
	@$(need-modules); gofmt -l -w $(MODULES)

vet: ## go vet every module
	@$(need-modules); \
	for m in $(MODULES); do \
		echo "==> $$m"; \
		(cd $$m && go vet ./...) || { echo "FAILED: go vet in $$m"; exit 1; }; \
	done

bench: ## Run every scenario of docs/performance.md beside its reference and print one table (BENCH_FLAGS, e.g. -only p1,p3)
	go run ./deploy/cmd/bench $(BENCH_FLAGS)

load: ## Build a fleet of TENANTS (default 1000) tenants and serve it: errors, tenant-plane memory, fleet migration runs
	go run ./deploy/cmd/bench -only p5 -tenants $(TENANTS)

subscribe: ## Print each tenant.created event (durable consumer on TENANT_EVENTS at NATS_URL)
	go run ./services/control-plane/cmd/tenant-events
