# cellar - top-level Makefile.
#   make run        install missing Debian packages, build, start cellard
#   make test       install missing packages, build (ASan+UBSan), run all tests
#   make bench      every benchmark (bench-fs, bench-net, bench-push)
#   make powerloss  the full power-loss sweeps (filesystem and updates)
#   make fuzz       libFuzzer targets (FUZZ_SECONDS each, default 60)
#   make fuzz-svc   the model-based protocol test on new seeds (FUZZ_SECONDS, default 600)
#   make size       device-side code cross-compiled for Cortex-M4 (-Os)
#   make ram        RAM of svc_t / a connection, worst-case stack (issue 14)
#   make test-device  the tests against the device profile (1 KiB frames)
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
DEB_PKGS += dosfstools mtools # issue 15 (sd): mkfs.fat, fsck.fat, mdir, mcopy for the FAT tests
DEB_PKGS += python3-protobuf openssl # pyc: tests/pyclient (protoc --python_out; openssl s_client for PSK)
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
HOST_SRCS    += service/host/sd_file.c          # issue 15 (sd): an image file as the SD card
MAIN_SRCS    := service/host/cellard.c clients/cli_main.c
LIB_SRCS     := $(wildcard clients/libcellar*.c)
CLI_SRCS     := $(filter-out $(MAIN_SRCS) $(LIB_SRCS),$(wildcard clients/*.c))
IMAGE_SRCS   := $(CFS_DEV_SRCS) $(SIM_SRCS) service/layout.c service/manifest.c
SUP_SRCS     := $(filter-out tests/support/linkrelay.c tests/support/uart_relay.c,$(wildcard tests/support/*.c)) # linkrelay, uart_relay: programs (issues 11, 12)
# issue 13 (tls): TLS over any transport, portable; host side in transport/host/tls_files.c
TP_TLS_SRCS  := $(wildcard transport/tls/*.c)

FAT_SRCS     := $(wildcard fs/fat/*.c)          # issue 15 (sd): FAT16/32 for the SD card, portable
# issue 14 (lwip): the lwIP transport (portable) and cellard's lwIP host side
# (Debian's liblwip + its tapif). Only cellard links them (-llwip).
LWIP_SRCS    := $(wildcard transport/lwip/*.c) service/host/lwip_host.c
LWIP_INC     := -isystem /usr/include/lwip -Itransport/lwip
LWIP_LDLIBS  := -llwip

# The device set: what runs on a module (make size builds exactly this).
DEVICE_SET    := $(CFS_DEV_SRCS) $(SVC_SRCS) $(TP_SRCS) $(TP_TLS_SRCS) $(FAT_SRCS)
# The daemon: the device set on a simulated flash, the POSIX loop and TCP.
DAEMON_SET    := $(DEVICE_SET) $(SIM_SRCS) $(TP_MEM_SRCS) $(TP_HOST_SRCS) $(HOST_SRCS)
# libcellar: the shared transport layer and codec; no service core, no fs.
LIBCELLAR_SET := $(LIB_SRCS) $(TP_SRCS) $(TP_MEM_SRCS) $(TP_HOST_SRCS) service/codec.c $(TP_TLS_SRCS)
# The CLI: libcellar and the offline image tool (fs, flash_sim, layout,
# manifest); no service core, no loop.
CLI_SET       := $(CLI_SRCS) $(LIBCELLAR_SET) $(IMAGE_SRCS)
# Tests: the filesystem tests link the filesystem and its model; the others
# link the union (an in-process daemon, the client side, tests/support).
CFS_TEST_SET   := $(CFS_DEV_SRCS) $(SIM_SRCS) tests/support/cfs_model.c
ALL_SET       := $(sort $(DAEMON_SET) $(CLI_SET) $(SUP_SRCS))
CORE_SRCS     := $(ALL_SET)
CFS_TESTS      := test_flash_sim test_fs_corrupt test_fs_diff test_fs_gcfail test_fs_unit \
                 test_fs_wear test_powerloss bench_fs sweep_fill
FAT_TESTS     := test_fat # issue 15 (sd): the FAT module alone
set_for = $(if $(filter $(FAT_TESTS),$1),$(FAT_SRCS),$(if $(filter $(CFS_TESTS),$1),$(CFS_TEST_SET),$(ALL_SET)))

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
# issue 14 (lwip): cellard also links the lwIP files and liblwip; only those
# files (and their test) see lwIP's headers; the test links tp_lwip only.
$(BUILD)/cellard: $(call objs,rel,$(LWIP_SRCS))
$(BUILD)/san/cellard: $(call objs,san,$(LWIP_SRCS))
$(BUILD)/cellard $(BUILD)/san/cellard $(BUILD)/san/tests/test_tp_lwip: LDLIBS += $(LWIP_LDLIBS)
$(call objs,rel,$(LWIP_SRCS) tests/test_tp_lwip.c): REL_CFLAGS += $(LWIP_INC)
$(call objs,san,$(LWIP_SRCS) tests/test_tp_lwip.c): SAN_CFLAGS += $(LWIP_INC)
$(BUILD)/san/tests/test_tp_lwip: $(BUILD)/san/tests/test_tp_lwip.o $(call san_objs,transport/lwip/tp_lwip.c)
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

# Can a full partition always be emptied? 20 fills per set of fs values,
# a table and JSON; fails unless every fill empties (issue 9 item 2,
# docs/FS.md sections 6 and 9)
sweep-fill: $(BUILD)/rel/tests/sweep_fill $(BUILD)/devfs/tests/sweep_fill
	$(BUILD)/rel/tests/sweep_fill $(BUILD)/sweep-fill.json
	$(BUILD)/devfs/tests/sweep_fill $(BUILD)/sweep-fill-device.json

# The same through the service: /usr filled over the protocol and emptied
# with Removes, 4 and 16 MiB, host and device profiles (about 12 minutes
# under ASan; make test runs the 4 MiB fills)
sweep-fill-svc: $(BUILD)/san/tests/test_svc_fill $(BUILD)/dev/tests/test_svc_fill
	$(BUILD)/san/tests/test_svc_fill --big
	$(BUILD)/dev/tests/test_svc_fill --big

bench-net: $(PROGRAMS) $(BENCH_BINS)
	BUILD=$(BUILD) bash tests/bench_net.sh

bench-push: $(PROGRAMS)
	BUILD=$(BUILD) bash tests/bench_push.sh

# issue 13: TLS beside scp (installs Debian's OpenSSH for a private sshd)
BENCH_TLS_PKGS := openssh-server openssh-client
bench-tls: $(DEPS_STAMP) $(PROGRAMS) $(BUILD)/rel/tests/bench_tls
	@missing=""; for p in $(BENCH_TLS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	BUILD=$(BUILD) bash tests/bench_tls.sh
# issue 14 (lwip): cellard on lwIP beside the host stack over a TAP path,
# and lwIP's RAM per connection (as root: netns, TAP; socat relays frames).
bench-lwip: $(PROGRAMS)
	@command -v socat >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q socat; }
	BUILD=$(BUILD) bash tests/bench_lwip.sh

# issue 14 (lwip): tp_lwip.c for a Cortex-M4 against the example firmware
# lwipopts.h (NO_SYS, transport/lwip/fw/), and what one connection costs in
# that configuration's lwIP pools (symbol sizes of fw/lwip_ram.c).
LWIP_FW_FLAGS := -mcpu=cortex-m4 -mthumb -Os -std=c11 -Wall -Wextra -Werror -ffunction-sections \
  -fdata-sections -DCELLAR_PROFILE_DEVICE -DNDEBUG -Itransport/lwip/fw -Itransport -Iservice/common \
  -idirafter /usr/include/lwip $(LWIP_FW_CFLAGS)
size-lwip: | $(DEPS_STAMP)
	@command -v arm-none-eabi-gcc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-arm-none-eabi libnewlib-arm-none-eabi; }
	@mkdir -p $(BUILD)/arm
	@arm-none-eabi-gcc $(LWIP_FW_FLAGS) -c transport/lwip/tp_lwip.c -o $(BUILD)/arm/tp_lwip.o
	@arm-none-eabi-gcc $(LWIP_FW_FLAGS) -c transport/lwip/fw/lwip_ram.c -o $(BUILD)/arm/lwip_ram.o
	@arm-none-eabi-size $(BUILD)/arm/tp_lwip.o | awk 'NR==2{printf "tp_lwip.c (Cortex-M4 -Os): .text %d .data %d .bss %d\n", $$1, $$2, $$3}'
	@echo "lwIP RAM per connection, example fw/lwipopts.h (Cortex-M4):"; arm-none-eabi-nm -S --radix=d $(BUILD)/arm/lwip_ram.o | awk '{printf "  %-22s %6d B\n", $$4, $$2}'
# ---- issue 11: the link emulator (a host program) and bench-link ------------------
$(BUILD)/linkrelay: tests/support/linkrelay.c | $(DEPS_STAMP)
	$(CC) $(REL_CFLAGS) -o $@ $<
test: $(BUILD)/linkrelay
bench-link: $(PROGRAMS) $(BUILD)/linkrelay
	BUILD=$(BUILD) bash tests/bench_link.sh
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

# issue 13: the module's mbedTLS has no threads, sockets or files
SIZE_TLS_FLAGS := -DMBEDTLS_USER_CONFIG_FILE='"tls/tp_tls_device_config.h"'
# ---- the device profile (issue 14: docs/DEVICE.md) -------------------------------
# CELLAR_PROFILE_DEVICE with its own generated codec: build/gen-device/ is
# protoc's output for proto/cellar.options followed by
# proto/cellar-device.options (small data fields and lists: the decoded
# structs fit 1 KiB frames). Objects in build/dev/ (ASan+UBSan, so they do
# not clash with build/san/), cross-compiled ones in build/arm/.
#   make size         .text/.data/.bss per module for Cortex-M4 (-Os) + sums
#   make ram          RAM of svc_t and a connection, worst-case stack of the
#                     request paths; both write build/size.json
#   make test-device  a device-profile daemon and service core under the
#                     service, update, e2e and model tests
DEV_GEN   := $(BUILD)/gen-device
DEV_GEN_C := $(DEV_GEN)/cellar.pb.c
DEV_GEN_H := $(DEV_GEN)/cellar.pb.h
DEV_CFLAGS := $(SAN_CFLAGS) -DCELLAR_PROFILE_DEVICE
dev_inc = $(subst -I$(BUILD)/gen,-I$(DEV_GEN),$(call inc_for,$1))
dev_objs = $(call objs,dev,$(sort $(1))) $(BUILD)/dev/gen/cellar.pb.o

$(DEV_GEN_C) $(DEV_GEN_H): proto/cellar.proto proto/cellar.options proto/cellar-device.options | $(DEPS_STAMP)
	@mkdir -p $(DEV_GEN)/opts
	cat proto/cellar.options proto/cellar-device.options > $(DEV_GEN)/opts/cellar.options
	cp proto/cellar.proto $(DEV_GEN)/opts/cellar.proto
	protoc --nanopb_opt=-I$(DEV_GEN)/opts --nanopb_out=$(DEV_GEN) -I$(DEV_GEN)/opts $(DEV_GEN)/opts/cellar.proto
$(BUILD)/dev/gen/cellar.pb.o: $(DEV_GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(DEV_CFLAGS) -I$(DEV_GEN) -c $< -o $@
$(BUILD)/dev/%.o: %.c $(DEV_GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(DEV_CFLAGS) $(call dev_inc,$<) -c $< -o $@
$(BUILD)/dev/cellard: $(call dev_objs,$(DAEMON_SET) service/host/cellard.c) $(call objs,dev,$(LWIP_SRCS))
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS) $(LWIP_LDLIBS)
$(call objs,dev,$(LWIP_SRCS)): DEV_CFLAGS += $(LWIP_INC)
# The in-process tests on the device profile (they build their requests
# with the device's structs and take max_chunk from the profile).
DEV_TESTS := test_svc_core test_update test_svc_model test_device_ram test_svc_fill
$(addprefix $(BUILD)/dev/tests/,$(DEV_TESTS)): $(BUILD)/dev/tests/%: $(BUILD)/dev/tests/%.o \
    $$(call dev_objs,$(DAEMON_SET) $(SUP_SRCS) clients/libcellar_util.c)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

# The filesystem's own tests on the device profile's fs values
# (cellar_config.h: a 56-key journal, so a smaller checkpoint reserve):
# the space tiers and the power-cut recovery hold with both sets of values.
# Objects in build/devfs/, with the host's per-thread work area
# (CFS_WORK_TLS: the tests mount without giving one).
# (test_fs_gcfail passes there too, but takes ~3 minutes: by hand,
# make build/devfs/tests/test_fs_gcfail.)
DEV_FS_TESTS := test_fs_unit test_fs_gcfail test_powerloss sweep_fill
DEV_FS_RUN   := test_fs_unit test_powerloss
$(BUILD)/devfs/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(DEV_CFLAGS) -DCFS_WORK_TLS=1 $(call dev_inc,$<) -c $< -o $@
$(addprefix $(BUILD)/devfs/tests/,$(DEV_FS_TESTS)): $(BUILD)/devfs/tests/%: $(BUILD)/devfs/tests/%.o \
    $$(call objs,devfs,$(CFS_TEST_SET))
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

DEV_MODEL_STEPS ?= 5000
# every e2e script that starts $(CELLARD); the fuzz smoke test builds its own,
# and e2e_link's round counts are the host profile's contract (16 requests
# in flight; a device that takes 4 costs about a round per 4 files:
# docs/PIPELINING.md); e2e_pyclient checks the host profile's figures (its
# 16 KiB writes and section 11's byte examples)
DEV_SCRIPTS := $(filter-out tests/e2e_fuzz_smoke.sh tests/e2e_link.sh tests/e2e_pyclient.sh,$(TEST_SCRIPTS))
test-device: $(DEPS_STAMP) $(BUILD)/dev/cellard $(BUILD)/san/cellar $(addprefix $(BUILD)/dev/tests/,$(DEV_TESTS)) \
    $(addprefix $(BUILD)/devfs/tests/,$(DEV_FS_RUN))
	@pass=0; fail=0; failed=""; \
	for t in $(DEV_FS_RUN); do \
	  echo "=== $(BUILD)/devfs/tests/$$t (the device profile's fs values)"; \
	  if $(BUILD)/devfs/tests/$$t; then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed $$t"; fi; \
	done; \
	for t in test_device_ram test_svc_core test_update test_svc_fill; do \
	  echo "=== $(BUILD)/dev/tests/$$t (device profile)"; \
	  if $(BUILD)/dev/tests/$$t; then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed $$t"; fi; \
	done; \
	echo "=== $(BUILD)/dev/tests/test_svc_model --steps $(DEV_MODEL_STEPS) (device profile)"; \
	if $(BUILD)/dev/tests/test_svc_model --steps $(DEV_MODEL_STEPS); then pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed test_svc_model"; fi; \
	for s in $(DEV_SCRIPTS); do \
	  echo "=== $$s (device-profile cellard)"; \
	  if BUILD=$(BUILD) CELLARD=$(BUILD)/dev/cellard CELLAR=$(BUILD)/san/cellar bash $$s; then \
	    pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed $$s"; fi; \
	done; \
	echo "=== tests/min_tour.sh (minimal build: every CELLAR_WITH_* off)"; \
	if BUILD=$(BUILD) CELLARD=$(BUILD)/min/cellard CELLAR=$(BUILD)/san/cellar bash tests/min_tour.sh; then \
	  pass=$$((pass+1)); else fail=$$((fail+1)); failed="$$failed tests/min_tour.sh"; fi; \
	[ -z "$$failed" ] || echo "failed:$$failed"; \
	echo "test-device suites: $$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

# Cortex-M4, -Os, the device profile. Modules: fs (cfs), service core
# (svc_*.c but the update ones), updates (txn, manifest, svc_update,
# svc_copy, svc_manifest_rpc), codec, generated protobuf, transport (tp.c,
# the URL parser). -fstack-usage and -fcallgraph-info give each function's
# frame and calls: tests/size/size_report.py sums the worst path.
ARM_CC    := arm-none-eabi-gcc
ARM_FLAGS := -mcpu=cortex-m4 -mthumb -Os -std=c11 -ffunction-sections -fdata-sections \
             -DCELLAR_PROFILE_DEVICE -DNDEBUG -fstack-usage -fcallgraph-info=su -MMD -MP \
             $(SIZE_TLS_FLAGS)
ARM_INC    = $(subst -I$(BUILD)/gen,-I$(DEV_GEN),$(DEV_INC)) -idirafter /usr/include
ARM_SRCS  := $(DEVICE_SET) $(DEV_GEN_C)
ARM_OBJS  := $(patsubst %.c,$(BUILD)/arm/%.o,$(subst $(DEV_GEN)/,gen/,$(ARM_SRCS)))
$(BUILD)/.arm-ok:
	@command -v $(ARM_CC) >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-arm-none-eabi libnewlib-arm-none-eabi; }
	@mkdir -p $(BUILD) && touch $@
$(BUILD)/arm/gen/cellar.pb.o: $(DEV_GEN_C) | $(BUILD)/.arm-ok
	@mkdir -p $(dir $@)
	cd $(dir $@) && $(ARM_CC) $(ARM_FLAGS) -MT $@ -MF $(CURDIR)/$(@:.o=.d) $(patsubst -I%,-I$(CURDIR)/%,$(ARM_INC)) -c $(CURDIR)/$< -o $(notdir $@)
$(BUILD)/arm/%.o: %.c $(DEV_GEN_H) | $(BUILD)/.arm-ok
	@mkdir -p $(dir $@)
	cd $(dir $@) && $(ARM_CC) $(ARM_FLAGS) -MT $@ -MF $(CURDIR)/$(@:.o=.d) $(patsubst -I%,-I$(CURDIR)/%,$(ARM_INC)) -c $(CURDIR)/$< -o $(notdir $@)
$(BUILD)/arm/ram_probe.o: tests/size/ram_probe.c $(DEV_GEN_H) | $(BUILD)/.arm-ok
	@mkdir -p $(dir $@)
	$(ARM_CC) $(ARM_FLAGS) $(ARM_INC) -c $< -o $@

# issue 14 (code size): the "minimal" device build, every feature switch of
# cellar_config.h off (CELLAR_WITH_SD/RAW/ACL/LOG 0) and without fs/fat/:
# build/arm-min/ for make size, build/min/ (ASan+UBSan, device profile) for
# make test-device (tests/min_tour.sh). make size also links each set with
# --gc-sections (roots: the public svc_* functions) as a firmware would.
MIN_FLAGS    := -DCELLAR_WITH_SD=0 -DCELLAR_WITH_RAW=0 -DCELLAR_WITH_ACL=0 -DCELLAR_WITH_LOG=0
ARM_MIN_OBJS := $(patsubst %.c,$(BUILD)/arm-min/%.o,$(filter-out $(FAT_SRCS),$(DEVICE_SET))) \
                $(BUILD)/arm/gen/cellar.pb.o
$(BUILD)/arm-min/%.o: %.c $(DEV_GEN_H) | $(BUILD)/.arm-ok
	@mkdir -p $(dir $@)
	cd $(dir $@) && $(ARM_CC) $(ARM_FLAGS) $(MIN_FLAGS) -MT $@ -MF $(CURDIR)/$(@:.o=.d) $(patsubst -I%,-I$(CURDIR)/%,$(ARM_INC)) -c $(CURDIR)/$< -o $(notdir $@)
$(BUILD)/min/%.o: %.c $(DEV_GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(DEV_CFLAGS) $(MIN_FLAGS) $(call dev_inc,$<) -c $< -o $@
$(call objs,min,$(LWIP_SRCS)): DEV_CFLAGS += $(LWIP_INC)
$(BUILD)/min/cellard: $(call objs,min,$(sort $(filter-out $(FAT_SRCS),$(DAEMON_SET)) service/host/cellard.c) $(LWIP_SRCS)) \
    $(BUILD)/dev/gen/cellar.pb.o
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS) $(LWIP_LDLIBS)
test-device: $(BUILD)/min/cellard
SIZE_REPORT = python3 tests/size/size_report.py --build $(BUILD) --json $(BUILD)/size.json
size: $(ARM_OBJS) $(ARM_MIN_OBJS)
	@$(SIZE_REPORT) --min "$(ARM_MIN_OBJS)" --roots "service/svc_core.h service/svc_sd.h service/svc_acl.h" size $(ARM_OBJS)
ram: $(ARM_OBJS) $(BUILD)/arm/ram_probe.o
	@$(SIZE_REPORT) ram --probe $(BUILD)/arm/ram_probe.o $(ARM_OBJS)

clean:
	rm -rf $(BUILD)

.PHONY: all deps run test deps-check layers-check powerloss sweep-fill-svc bench bench-fs bench-net bench-push bench-tls bench-lwip size-lwip fuzz fuzz-svc size install clean FORCE
.PHONY: ram test-device # issue 14
.PHONY: sweep-fill
.PHONY: all deps run test deps-check layers-check powerloss bench bench-fs bench-net bench-push bench-link fuzz fuzz-svc size install clean FORCE
FORCE:
.PRECIOUS: $(BUILD)/san/tests/%.o $(BUILD)/rel/tests/%.o
# Objects reached only through a link set (test support, secondary expansion) are kept too.
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
