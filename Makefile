# Non-recursive build of the webhook broker: libcommon.a, three daemons, unit tests, bench tools.
# make all | test | run | bench | bench-queries | lint | clean      (SAN=1: ASan+UBSan build in build-san/)
# Binaries: webhook-broker, webhook-worker, webhook-reconciler, webhookctl (the API's command line)
# run, test and bench install missing Debian packages (scripts/deps.sh) before they compile
# anything: they call make again for the build, so its pkg-config flags are read after the
# install (scripts/check-order.sh, run by CI, keeps it that way).

CC      ?= cc
PKGS    := hiredis libevent libcurl libcjson libpq libcrypto
BUILD   := build
ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
OPT     ?= -O2 -g
# Hardening: bounds-checked libc calls, stack canaries, position-independent executables,
# read-only relocations resolved at start (scripts/check-hardening.sh verifies the binaries).
HARDEN_CFLAGS  := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -Wstrict-prototypes \
           -Wwrite-strings -Wshadow -Wformat=2 -MMD -MP -Icommon $(HARDEN_CFLAGS) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
LDFLAGS := $(HARDEN_LDFLAGS) $(SANFLAGS)

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBCOMMON  := $(BUILD)/libcommon.a

BROKER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard broker/*.c))
WORKER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard worker/*.c))
RECON_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard reconciler/*.c))
CLI_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c))

BINS := $(BUILD)/webhook-broker $(BUILD)/webhook-worker $(BUILD)/webhookctl
ifneq ($(RECON_OBJ),)
BINS += $(BUILD)/webhook-reconciler
endif

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Test helpers built with the unit tests but not run by them (tests/integration uses them).
TEST_TOOLS := $(BUILD)/tests/keyslot
BENCH_SRC := tests/bench/loadgen.c tests/bench/receiver.c
BENCH_BINS := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all test unit integration run bench bench-big bench-queries lint clean deps check-hardening build-run \
        build-bench
all: $(BINS) $(UNIT_BINS) $(TEST_TOOLS) $(BENCH_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJ)
	$(AR) rcs $@ $^

# The OpenAPI document is built into the broker (broker/openapi.c: .incbin "openapi.json").
$(BUILD)/broker/openapi.o: docs/openapi.json
$(BUILD)/broker/openapi.o: CFLAGS += -Wa,-I$(CURDIR)/docs
# So are the web console's files (broker/console.c: .incbin "index.html", ...; decision 38).
CONSOLE_FILES := console/index.html console/app.js console/style.css
$(BUILD)/broker/console.o: $(CONSOLE_FILES)
$(BUILD)/broker/console.o: CFLAGS += -Wa,-I$(CURDIR)/console
$(BUILD)/webhook-broker: $(BROKER_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/webhook-worker: $(WORKER_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/webhook-reconciler: $(RECON_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
# The command line of the API (cli/): libcurl easy + cJSON, mem/libmem from libcommon.a.
$(BUILD)/webhookctl: $(CLI_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
# Unit tests of a broker module link its object with stubs of what it calls.
$(BUILD)/tests/test_trigger: $(BUILD)/tests/unit/test_trigger.o $(BUILD)/broker/trigger.o \
                             $(BUILD)/broker/subfilter.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/test_auth: $(BUILD)/tests/unit/test_auth.o $(BUILD)/broker/auth.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/test_verify: $(BUILD)/tests/unit/test_verify.o $(BUILD)/broker/verify.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/test_cli: $(BUILD)/tests/unit/test_cli.o $(BUILD)/cli/args.o $(BUILD)/cli/table.o \
                         $(BUILD)/cli/api.o $(BUILD)/cli/http.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
# Counts the libraries' allocations and simulates a failing curl_slist_append.
$(BUILD)/tests/test_libmem: $(BUILD)/tests/unit/test_libmem.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--wrap=xmalloc,--wrap=curl_slist_append -o $@ $^ $(LDLIBS)
# The bench tools share tests/bench/http1.c (HTTP/1.x head parsing); the load generator's
# connections are tests/bench/hconn.c.
$(BUILD)/bench/loadgen: $(BUILD)/tests/bench/hconn.o
$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/tests/bench/http1.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Packages first, then (a new make, which reads pkg-config after the install) the build; C
# unit tests (pure logic), the hardening check, then integration tests against real servers.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit check-hardening integration
unit: $(UNIT_BINS)
	@sh scripts/unit.sh $(UNIT_BINS)
check-hardening: $(BINS)
	@bash scripts/check-hardening.sh $(BINS)
integration: $(BINS)
	WH_BUILD_DIR=$(abspath $(BUILD)) WH_SAN=$(SAN) pytest-3 -q -p no:cacheprovider --durations=12 tests/integration

run: deps
	@$(MAKE) --no-print-directory build-run
	@bash scripts/run.sh
build-run: $(BINS)

bench: deps
	@$(MAKE) --no-print-directory build-bench
	@WH_BUILD_DIR=$(abspath $(BUILD)) bash scripts/bench.sh
build-bench: $(BINS) $(BENCH_BINS)

# Scenario a on an empty log, then on a log of 10 million finished jobs (BENCH_BIG_JOBS=N).
bench-big: deps
	@$(MAKE) --no-print-directory build-bench
	@WH_BUILD_DIR=$(abspath $(BUILD)) BENCH_BIG=1 bash scripts/bench.sh

# Read latency over 10 million jobs (scripts/bench-queries.sh; BENCH_JOBS=N for fewer).
bench-queries: deps
	@$(MAKE) --no-print-directory build-run
	@WH_BUILD_DIR=$(abspath $(BUILD)) bash scripts/bench-queries.sh

deps:
	@bash scripts/deps.sh

lint:
	@bash scripts/lint.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- make fuzz: libFuzzer targets (tests/fuzz/fuzz_*.c), clang + ASan + UBSan, in build-fuzz/ ----
# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="fuzz_jsonv fuzz_url"]   (make fuzz-clean removes all)
# Builds every tests/fuzz/fuzz_*.c against the common/*.c it needs, then runs each target for
# FUZZ_SECONDS on build-fuzz/corpus/<target> (new inputs are kept there) plus the seeds in
# tests/fuzz/seeds/<target>/. Fails when any target finds a crash, leak, sanitizer report,
# input slower than 30 s or out-of-memory; the reproducer is in build-fuzz/artifacts/, the log in
# build-fuzz/logs/. Needs Debian's libclang-rt-14-dev (bash scripts/deps.sh).
FUZZ_CC      ?= clang
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -Wstrict-prototypes \
                -Wwrite-strings -Wshadow -Wformat=2 -MMD -MP -Icommon \
                $(shell pkg-config --cflags libcurl libcjson) $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_LDLIBS  := $(shell pkg-config --libs libcurl libcjson) -lm
FUZZ_LIB_OBJ := $(patsubst %,$(FUZZ_BUILD)/common/%.o,codec filter jsonv mem netguard valid)
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/%.c=%)
# -max_len per target: a little above the limit each function enforces (JSON: well above the
# 64-level depth limit, yet small enough to mutate quickly). Unlisted targets get 4096.
FUZZ_MAXLEN_fuzz_jsonv      := 4096
FUZZ_MAXLEN_fuzz_url        := 2100
FUZZ_MAXLEN_fuzz_event_name := 800
FUZZ_MAXLEN_fuzz_headers    := 4400
FUZZ_MAXLEN_fuzz_netguard   := 512
FUZZ_MAXLEN_fuzz_filter     := 8192

.PHONY: fuzz fuzz-build fuzz-clean
fuzz-build: $(FUZZ_BINS)

$(FUZZ_LIB_OBJ): $(FUZZ_BUILD)/common/%.o: common/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_BINS:%=%.o): $(FUZZ_BUILD)/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_BINS): $(FUZZ_BUILD)/%: $(FUZZ_BUILD)/%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LDLIBS)

fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/artifacts $(FUZZ_BUILD)/logs; failed=""; \
	for tm in $(foreach t,$(FUZZ_TARGETS),$(t):$(FUZZ_MAXLEN_$(t))); do \
	    t=$${tm%%:*}; maxlen=$${tm#*:}; maxlen=$${maxlen:-4096}; \
	    log=$(FUZZ_BUILD)/logs/$$t.log; seeds=tests/fuzz/seeds/$$t; \
	    [ -d "$$seeds" ] || seeds=; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    echo "fuzz: $$t: $(FUZZ_SECONDS) s, -max_len=$$maxlen"; \
	    if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	        ./$(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$maxlen -timeout=30 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t $$seeds >$$log 2>&1; then \
	        awk -v t=$$t '/^#[0-9]+/ && / cov: / { last = $$0 } \
	            /average_exec_per_sec/ { eps = $$2 } /number_of_executed_units/ { runs = $$2 } \
	            END { sub(/^#[0-9]+[ \t]+[A-Z]+[ \t]+/, "", last); \
	                  printf "fuzz: %s: ok, %s runs, %s exec/s, %s\n", t, runs, eps, last }' $$log; \
	    else \
	        echo "fuzz: $$t: FAILED (log: $$log)"; tail -n 30 $$log | sed 's/^/    /'; \
	        ls $(FUZZ_BUILD)/artifacts/$$t-* 2>/dev/null | sed 's/^/    reproducer: /'; \
	        failed="$$failed $$t"; \
	    fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi; echo "fuzz: all passed"

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
