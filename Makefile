# Non-recursive build of the webhook broker: libcommon.a, three daemons, unit tests, bench tools.
# make all | test | run | bench | lint | clean      (SAN=1: ASan+UBSan build in build-san/)

CC      ?= cc
PKGS    := hiredis libevent libcurl libcjson libpq libcrypto
BUILD   := build
ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
OPT     ?= -O2 -g
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -Wstrict-prototypes \
           -Wwrite-strings -Wshadow -Wformat=2 -MMD -MP -Icommon \
           $(shell pkg-config --cflags $(PKGS)) $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm
LDFLAGS := $(SANFLAGS)

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBCOMMON  := $(BUILD)/libcommon.a

BROKER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard broker/*.c))
WORKER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard worker/*.c))
RECON_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard reconciler/*.c))

BINS := $(BUILD)/webhook-broker $(BUILD)/webhook-worker
ifneq ($(RECON_OBJ),)
BINS += $(BUILD)/webhook-reconciler
endif

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BINS := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all test unit integration run bench lint clean deps
all: $(BINS) $(UNIT_BINS) $(BENCH_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJ)
	$(AR) rcs $@ $^

$(BUILD)/webhook-broker: $(BROKER_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/webhook-worker: $(WORKER_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/webhook-reconciler: $(RECON_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# C unit tests first (pure logic), then integration tests against real servers.
test: all unit integration
unit: $(UNIT_BINS)
	@sh scripts/unit.sh $(UNIT_BINS)
integration: $(BINS)
	WH_BUILD_DIR=$(abspath $(BUILD)) WH_SAN=$(SAN) pytest-3 -q -p no:cacheprovider tests/integration

run: $(BINS)
	@bash scripts/run.sh

bench: $(BINS) $(BENCH_BINS)
	@WH_BUILD_DIR=$(abspath $(BUILD)) bash scripts/bench.sh

deps:
	@bash scripts/deps.sh

lint:
	@bash scripts/lint.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
