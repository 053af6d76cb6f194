# cellar - top-level Makefile.
#   make run        install missing Debian packages, build, start cellard
#   make test       install missing packages, build (ASan+UBSan), run all tests
#   make bench      every benchmark (bench-fs, bench-net, bench-push)
#   make powerloss  the full power-loss sweeps (filesystem and updates)
#   make fuzz       libFuzzer targets (FUZZ_SECONDS each, default 60)
#   make fuzz-svc   the model-based protocol test on new seeds (FUZZ_SECONDS, default 600)
#   make size       device-side code cross-compiled for Cortex-M4 (-Os)
#   make install PREFIX=/usr/local
#
# Layout of build/: rel/ optimised objects and programs (cellard, cellar,
# benchmarks), san/ the same built with AddressSanitizer + UBSan (tests),
# gen/ protoc output, *.json benchmark results.
SHELL := /bin/bash
.DEFAULT_GOAL := all

BUILD  ?= build
PREFIX ?= /usr/local
CC     ?= cc
VERSION := 0.1.0

# ---- Debian packages ---------------------------------------------------
DEB_PKGS := liblwip-dev libmbedtls-dev libnanopb-dev nanopb protobuf-compiler \
            libcjson-dev zlib1g-dev libssl-dev clang libclang-rt-14-dev pkg-config iproute2 python3
DEPS_STAMP := $(BUILD)/.deps-ok

$(DEPS_STAMP):
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@mkdir -p $(BUILD) && touch $@

deps: $(DEPS_STAMP)

# ---- flags ----------------------------------------------------------------
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
BASEFLAGS := -std=c11 -g $(WARN) -D_GNU_SOURCE -DCELLAR_VERSION='"$(VERSION)"' $(CELLAR_CFLAGS) -MMD -MP
REL_CFLAGS := $(BASEFLAGS) -O2 -fPIC
SAN_CFLAGS := $(BASEFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=address,undefined
LDLIBS := -lprotobuf-nanopb -lmbedtls -lmbedx509 -lmbedcrypto -lcjson -lz -lcrypto -lpthread -lm

# ---- include paths per layer ---------------------------------------------------
# A file sees only the headers of its own layer and the ones below it, so an
# include that points up (a device file including loop.h, cellar.h, cli.h or
# svc_rig.h) is a compile error. service/common/ (cellar_config.h, csha.h)
# is below everything. Compile-time options: service/common/cellar_config.h
# (a file of your own with CFLAGS+=-DCELLAR_CONFIG_FILE='"my_config.h"').
GEN_INC    := -I$(BUILD)/gen
COMMON_INC := -Iservice/common
DEV_INC    := -Ifs -Iservice -Itransport -Itransport/link $(COMMON_INC) $(GEN_INC)   # the device set
HOST_INC   := $(DEV_INC) -Iservice/host                             # the daemon
LIB_INC    := -Iinclude -Iclients -Itransport -Itransport/link -Iservice $(COMMON_INC) $(GEN_INC) # libcellar (codec.h)
CLI_INC    := $(LIB_INC) -Ifs                                       # CLI + image tool
TEST_INC   := -Iinclude -Ifs -Iservice -Iservice/host -Itransport -Itransport/link -Iclients \
              $(COMMON_INC) -Itests/support $(GEN_INC)
inc_for = $(if $(filter tests/%,$1),$(TEST_INC),$(if $(filter clients/libcellar%,$1),$(LIB_INC),$(if \
  $(filter clients/%,$1),$(CLI_INC),$(if $(filter service/host/% transport/host/%,$1),$(HOST_INC),$(DEV_INC)))))

# ---- sources and link sets -------------------------------------------------------
# Dependencies point down: device set <- daemon; transport + codec <- libcellar
# <- CLI. Each program and test links only its set (make layers-check).
GEN_C    := $(BUILD)/gen/cellar.pb.c
GEN_H    := $(BUILD)/gen/cellar.pb.h
CFS_DEV_SRCS  := $(filter-out fs/flash_sim.c,$(wildcard fs/*.c))   # cfs, portable
SIM_SRCS     := fs/flash_sim.c                                    # NOR simulator (host)
SVC_SRCS     := $(wildcard service/*.c)         # service core, codec, manifest, txn, layout
TP_SRCS      := transport/tp.c                  # portable transport: URL parser
TP_SRCS      += $(wildcard transport/link/*.c)  # issue 12: serial link layer + tp_link (portable)
TP_MEM_SRCS  := transport/tp_mem.c              # in-memory pair (tests, in-process links; mallocs)
TP_HOST_SRCS := $(wildcard transport/host/*.c)  # POSIX transports (TCP) and clock
HOST_SRCS    := service/host/loop.c             # the daemon's poll loop
MAIN_SRCS    := service/host/cellard.c clients/cli_main.c
LIB_SRCS     := $(wildcard clients/libcellar*.c)
CLI_SRCS     := $(filter-out $(MAIN_SRCS) $(LIB_SRCS),$(wildcard clients/*.c))
IMAGE_SRCS   := $(CFS_DEV_SRCS) $(SIM_SRCS) service/layout.c service/manifest.c
SUP_SRCS     := $(filter-out tests/support/uart_relay.c,$(wildcard tests/support/*.c)) # uart_relay: a program (issue 12)

# The device set: what runs on a module (make size builds exactly this).
DEVICE_SET    := $(CFS_DEV_SRCS) $(SVC_SRCS) $(TP_SRCS)
# The daemon: the device set on a simulated flash, the POSIX loop and TCP.
DAEMON_SET    := $(DEVICE_SET) $(SIM_SRCS) $(TP_MEM_SRCS) $(TP_HOST_SRCS) $(HOST_SRCS)
# libcellar: the shared transport layer and codec; no service core, no fs.
LIBCELLAR_SET := $(LIB_SRCS) $(TP_SRCS) $(TP_MEM_SRCS) $(TP_HOST_SRCS) service/codec.c
# The CLI: libcellar and the offline image tool (fs, flash_sim, layout,
# manifest); no service core, no loop.
CLI_SET       := $(CLI_SRCS) $(LIBCELLAR_SET) $(IMAGE_SRCS)
# Tests: the filesystem tests link the filesystem and its model; the others
# link the union (an in-process daemon, the client side, tests/support).
CFS_TEST_SET   := $(CFS_DEV_SRCS) $(SIM_SRCS) tests/support/cfs_model.c
ALL_SET       := $(sort $(DAEMON_SET) $(CLI_SET) $(SUP_SRCS))
CORE_SRCS     := $(ALL_SET)
CFS_TESTS      := test_flash_sim test_fs_corrupt test_fs_diff test_fs_gcfail test_fs_unit \
                 test_fs_wear test_powerloss bench_fs
set_for = $(if $(filter $(CFS_TESTS),$1),$(CFS_TEST_SET),$(ALL_SET))

TEST_SRCS  := $(wildcard tests/test_*.c)
BENCH_SRCS := $(wildcard tests/bench_*.c)
FUZZ_SRCS  := $(wildcard tests/fuzz_*.c)
TEST_SCRIPTS := $(sort $(wildcard tests/e2e_*.sh))

objs = $(patsubst %.c,$(BUILD)/$(1)/%.o,$(2))
rel_objs = $(call objs,rel,$(sort $(1))) $(BUILD)/rel/gen/cellar.pb.o
san_objs = $(call objs,san,$(sort $(1))) $(BUILD)/san/gen/cellar.pb.o

TEST_BINS  := $(patsubst tests/%.c,$(BUILD)/san/tests/%,$(TEST_SRCS))
BENCH_BINS := $(patsubst tests/%.c,$(BUILD)/rel/tests/%,$(BENCH_SRCS))

# ---- generated protocol code ---------------------------------------------------
$(GEN_C) $(GEN_H): proto/cellar.proto proto/cellar.options | $(DEPS_STAMP)
	@mkdir -p $(BUILD)/gen
	protoc --nanopb_opt=-Iproto --nanopb_out=$(BUILD)/gen -Iproto proto/cellar.proto

$(BUILD)/rel/gen/cellar.pb.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $(DEV_INC) -c $< -o $@
$(BUILD)/san/gen/cellar.pb.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) $(DEV_INC) -c $< -o $@

# ---- objects ----------------------------------------------------------------
$(BUILD)/rel/%.o: %.c $(GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $(call inc_for,$<) -c $< -o $@
$(BUILD)/san/%.o: %.c $(GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) $(call inc_for,$<) -c $< -o $@

# ---- programs ---------------------------------------------------------------
$(BUILD)/cellard: $(call rel_objs,$(DAEMON_SET) service/host/cellard.c)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/cellar: $(call rel_objs,$(CLI_SET) clients/cli_main.c)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/san/cellard: $(call san_objs,$(DAEMON_SET) service/host/cellard.c)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/san/cellar: $(call san_objs,$(CLI_SET) clients/cli_main.c)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

# A test links its set (set_for): $$* is the test's name.
.SECONDEXPANSION:
$(BUILD)/san/tests/%: $(BUILD)/san/tests/%.o $$(call san_objs,$$(call set_for,$$*))
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/rel/tests/%: $(BUILD)/rel/tests/%.o $$(call rel_objs,$$(call set_for,$$*))
	$(CC) -o $@ $^ $(LDLIBS)

PROGRAMS := $(BUILD)/cellard $(BUILD)/cellar
SAN_PROGRAMS := $(BUILD)/san/cellard $(BUILD)/san/cellar

all: $(DEPS_STAMP) $(PROGRAMS) $(BUILD)/libcellar.a $(BUILD)/libcellar.so $(BUILD)/cellar.pc

# ---- libcellar ----------------------------------------------------------------
# libcellar shares the daemon's transport layer and codec (one URL parser,
# TCP connector and framing for both ends).
LIBCELLAR_OBJS := $(call rel_objs,$(LIBCELLAR_SET))
$(BUILD)/libcellar.a: $(LIBCELLAR_OBJS)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libcellar.so: $(LIBCELLAR_OBJS)
	$(CC) -shared -Wl,-soname,libcellar.so.0 -o $@ $^ -lprotobuf-nanopb -lcrypto -lmbedtls -lmbedx509 -lmbedcrypto -lcjson
$(BUILD)/cellar.pc: Makefile FORCE
	@mkdir -p $(BUILD)
	@printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: cellar\nDescription: client library for the cellar storage service\nVersion: %s\nLibs: -L$${libdir} -lcellar\nLibs.private: -lprotobuf-nanopb -lcrypto -lmbedtls -lmbedx509 -lmbedcrypto -lcjson\nCflags: -I$${includedir}\n' '$(PREFIX)' '$(VERSION)' > $@

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libcellar.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libcellar.so $(DESTDIR)$(PREFIX)/lib/libcellar.so.0
	ln -sf libcellar.so.0 $(DESTDIR)$(PREFIX)/lib/libcellar.so
	install -m 644 include/cellar.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/cellar.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/

# ---- run ----------------------------------------------------------------
run: $(DEPS_STAMP) $(BUILD)/cellard $(BUILD)/cellar
	./$(BUILD)/cellard $(RUN_ARGS)

# ---- tests ----------------------------------------------------------------
# Every tests/test_*.c is a program (exit 0 = pass); every tests/e2e_*.sh is a
# script run with BUILD, CELLARD and CELLAR set to the sanitised programs.
test: $(DEPS_STAMP) $(TEST_BINS) $(SAN_PROGRAMS) $(BUILD)/libcellar.a
	@pass=0; fail=0; failed=""; \
	if $(MAKE) --no-print-directory deps-check; then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed deps-check"; fi; \
	if $(MAKE) --no-print-directory layers-check; then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed layers-check"; fi; \
	for t in $(TEST_BINS); do \
	  echo "=== $$t"; \
	  if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed $$t"; fi; \
	done; \
	for s in $(TEST_SCRIPTS); do \
	  echo "=== $$s"; \
	  if BUILD=$(BUILD) CELLARD=$(BUILD)/san/cellard CELLAR=$(BUILD)/san/cellar bash $$s; then \
	    pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed $$s"; fi; \
	done; \
	[ -z "$$failed" ] || echo "failed:$$failed"; \
	echo "test suites: $$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

# The service core's files call only the ones below them (the order is in
# service/deps_check.py; the picture in docs/ARCHITECTURE.md).
deps-check: $(call objs,san,$(SVC_SRCS))
	python3 service/deps_check.py $^

# Each program carries only its layers: the CLI no service core and no loop,
# the daemon no CLI, libcellar no service core, transaction or filesystem.
layers-check: $(BUILD)/cellar $(BUILD)/cellard $(BUILD)/libcellar.a
	@bad=0; \
	for s in svc_process loop_turn txn_commit; do \
	  if nm $(BUILD)/cellar | grep -qw "$$s"; then echo "layers-check: $(BUILD)/cellar has $$s"; bad=1; fi; done; \
	for s in cli_main cellar_push; do \
	  if nm $(BUILD)/cellard | grep -qw "$$s"; then echo "layers-check: $(BUILD)/cellard has $$s"; bad=1; fi; done; \
	if nm $(BUILD)/libcellar.a | grep -E ' (svc|txn|cfs|fs)_[A-Za-z0-9_]*$$'; then \
	  echo "layers-check: $(BUILD)/libcellar.a has service, transaction or fs symbols"; bad=1; fi; \
	[ $$bad -eq 0 ] && echo "layers-check: ok (cellar: no service core or loop; cellard: no CLI; libcellar: no svc_/txn_/cfs_)"

powerloss: $(BUILD)/san/tests/test_powerloss $(BUILD)/san/tests/test_update
	$(BUILD)/san/tests/test_powerloss --full
	$(BUILD)/san/tests/test_update --full

bench: bench-fs bench-net bench-push

bench-fs: $(BUILD)/rel/tests/bench_fs
	$(BUILD)/rel/tests/bench_fs $(BUILD)/bench-fs.json

bench-net: $(PROGRAMS) $(BENCH_BINS)
	BUILD=$(BUILD) bash tests/bench_net.sh

bench-push: $(PROGRAMS)
	BUILD=$(BUILD) bash tests/bench_push.sh

# ---- UART link (issue 12) ---------------------------------------------------------
# uart_relay: the serial line emulator (two pty pairs, paced, with faults);
# e2e_uart.sh needs it; bench-uart runs transfers across it.
$(BUILD)/uart_relay: tests/support/uart_relay.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -o $@ $<
test: $(BUILD)/uart_relay
bench-uart: $(PROGRAMS) $(BUILD)/uart_relay
	BUILD=$(BUILD) bash tests/bench_uart.sh
.PHONY: bench-uart

# ---- fuzzing (clang + libFuzzer) ------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := $(BASEFLAGS) -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
$(BUILD)/fuzz/%: tests/%.c $(CORE_SRCS) $(GEN_C)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(TEST_INC) -o $@ $< $(CORE_SRCS) $(GEN_C) $(LDLIBS)

FUZZ_BINS := $(patsubst tests/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
fuzz: $(DEPS_STAMP) $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do mkdir -p $(BUILD)/corpus/$$(basename $$f); \
	  echo "=== $$f ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=70000 $(BUILD)/corpus/$$(basename $$f) || exit 1; done

# The model-based protocol test (tests/test_svc_model.c) on new seeds for as
# long as asked: FUZZ_SECONDS (default 600 here); SVC_MODEL_ARGS for more
# options (e.g. --skip-known ...). The last line is
# "svc-model: N steps, N restarts, N failed".
FUZZ_SVC_SECONDS = $(if $(filter command line environment,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),600)
fuzz-svc: $(DEPS_STAMP) $(BUILD)/san/tests/test_svc_model
	$(BUILD)/san/tests/test_svc_model --seconds $(FUZZ_SVC_SECONDS) --seed $$(date +%s) $(SVC_MODEL_ARGS)
$(BUILD)/fuzz/fuzz_svc_seq: tests/test_svc_model.c

# ---- size on a Cortex-M4 --------------------------------------------------------
size: $(GEN_C)
	@command -v arm-none-eabi-gcc >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-arm-none-eabi libnewlib-arm-none-eabi; }
	@mkdir -p $(BUILD)/arm
	@printf '%-28s %8s %8s %8s\n' module .text .data .bss; \
	for f in $(DEVICE_SET) $(GEN_C); do \
	  o=$(BUILD)/arm/$$(basename $$f .c).o; \
	  arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -std=c11 -ffunction-sections -fdata-sections \
	    -DCELLAR_PROFILE_DEVICE -DNDEBUG $(DEV_INC) -idirafter /usr/include -c $$f -o $$o || exit 1; \
	  arm-none-eabi-size $$o | awk -v m=$$f 'NR==2{printf "%-28s %8d %8d %8d\n", m, $$1, $$2, $$3}'; \
	done

clean:
	rm -rf $(BUILD)

.PHONY: all deps run test deps-check layers-check powerloss bench bench-fs bench-net bench-push fuzz fuzz-svc size install clean FORCE
FORCE:
.PRECIOUS: $(BUILD)/san/tests/%.o $(BUILD)/rel/tests/%.o
# Objects reached only through a link set (test support, secondary expansion) are kept too.
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
