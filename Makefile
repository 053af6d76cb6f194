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
INCLUDES := -Iinclude -Ifs -Iservice -Itransport -Iclients -Itests/support -I$(BUILD)/gen
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
BASEFLAGS := -std=c11 -g $(WARN) -D_GNU_SOURCE -DCELLAR_VERSION='"$(VERSION)"' $(INCLUDES) -MMD -MP
REL_CFLAGS := $(BASEFLAGS) -O2 -fPIC
SAN_CFLAGS := $(BASEFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=address,undefined
LDLIBS := -lprotobuf-nanopb -lmbedtls -lmbedx509 -lmbedcrypto -lcjson -lz -lcrypto -lpthread -lm

# ---- sources ----------------------------------------------------------------
GEN_C    := $(BUILD)/gen/cellar.pb.c
GEN_H    := $(BUILD)/gen/cellar.pb.h
MAIN_SRCS := service/cellard.c clients/cli_main.c
FS_SRCS   := $(wildcard fs/*.c)
SVC_SRCS  := $(filter-out $(MAIN_SRCS),$(wildcard service/*.c))
TP_SRCS   := $(wildcard transport/*.c)
LIB_SRCS  := $(wildcard clients/libcellar*.c)
CLI_SRCS  := $(filter-out $(MAIN_SRCS) $(LIB_SRCS),$(wildcard clients/*.c))
SUP_SRCS  := $(wildcard tests/support/*.c)
CORE_SRCS := $(FS_SRCS) $(SVC_SRCS) $(TP_SRCS) $(LIB_SRCS) $(CLI_SRCS)

TEST_SRCS  := $(wildcard tests/test_*.c)
BENCH_SRCS := $(wildcard tests/bench_*.c)
FUZZ_SRCS  := $(wildcard tests/fuzz_*.c)
TEST_SCRIPTS := $(sort $(wildcard tests/e2e_*.sh))

objs = $(patsubst %.c,$(BUILD)/$(1)/%.o,$(2))

REL_CORE := $(call objs,rel,$(CORE_SRCS)) $(BUILD)/rel/gen/cellar.pb.o
SAN_CORE := $(call objs,san,$(CORE_SRCS)) $(BUILD)/san/gen/cellar.pb.o
REL_SUP  := $(call objs,rel,$(SUP_SRCS))
SAN_SUP  := $(call objs,san,$(SUP_SRCS))

TEST_BINS  := $(patsubst tests/%.c,$(BUILD)/san/tests/%,$(TEST_SRCS))
BENCH_BINS := $(patsubst tests/%.c,$(BUILD)/rel/tests/%,$(BENCH_SRCS))

# ---- generated protocol code ---------------------------------------------------
$(GEN_C) $(GEN_H): proto/cellar.proto proto/cellar.options | $(DEPS_STAMP)
	@mkdir -p $(BUILD)/gen
	protoc --nanopb_opt=-Iproto --nanopb_out=$(BUILD)/gen -Iproto proto/cellar.proto

$(BUILD)/rel/gen/cellar.pb.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -c $< -o $@
$(BUILD)/san/gen/cellar.pb.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -c $< -o $@

# ---- objects ----------------------------------------------------------------
$(BUILD)/rel/%.o: %.c $(GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -c $< -o $@
$(BUILD)/san/%.o: %.c $(GEN_H) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -c $< -o $@

# ---- programs ---------------------------------------------------------------
$(BUILD)/cellard: $(BUILD)/rel/service/cellard.o $(REL_CORE)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/cellar: $(BUILD)/rel/clients/cli_main.o $(REL_CORE)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/san/cellard: $(BUILD)/san/service/cellard.o $(SAN_CORE)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/san/cellar: $(BUILD)/san/clients/cli_main.o $(SAN_CORE)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/san/tests/%: $(BUILD)/san/tests/%.o $(SAN_CORE) $(SAN_SUP)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/rel/tests/%: $(BUILD)/rel/tests/%.o $(REL_CORE) $(REL_SUP)
	$(CC) -o $@ $^ $(LDLIBS)

PROGRAMS := $(if $(wildcard service/cellard.c),$(BUILD)/cellard) \
            $(if $(wildcard clients/cli_main.c),$(BUILD)/cellar)
SAN_PROGRAMS := $(if $(wildcard service/cellard.c),$(BUILD)/san/cellard) \
                $(if $(wildcard clients/cli_main.c),$(BUILD)/san/cellar)

all: $(DEPS_STAMP) $(PROGRAMS) $(BUILD)/libcellar.a $(BUILD)/libcellar.so $(BUILD)/cellar.pc

# ---- libcellar ----------------------------------------------------------------
# libcellar shares the daemon's transport layer and codec (one URL parser,
# TCP connector and framing for both ends).
LIB_SHARED_SRCS := transport/tp.c transport/tp_tcp.c transport/tp_mem.c service/codec.c
LIBCELLAR_OBJS := $(call objs,rel,$(LIB_SRCS) $(LIB_SHARED_SRCS)) $(BUILD)/rel/gen/cellar.pb.o
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

# ---- fuzzing (clang + libFuzzer) ------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := $(BASEFLAGS) -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CORE := $(filter-out fs/flash_sim.c,$(CORE_SRCS)) fs/flash_sim.c
$(BUILD)/fuzz/%: tests/%.c $(CORE_SRCS) $(GEN_C) $(SUP_SRCS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(CORE_SRCS) $(GEN_C) $(SUP_SRCS) $(LDLIBS)

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
DEVICE_SRCS := $(filter-out fs/flash_sim.c,$(FS_SRCS)) \
  $(addprefix service/svc_,msg.c part.c path.c conn.c job.c store.c file.c copy.c update.c manifest_rpc.c core.c dispatch.c) \
  service/manifest.c service/txn.c service/layout.c service/codec.c
size: $(GEN_C)
	@command -v arm-none-eabi-gcc >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-arm-none-eabi libnewlib-arm-none-eabi; }
	@mkdir -p $(BUILD)/arm
	@printf '%-28s %8s %8s %8s\n' module .text .data .bss; \
	for f in $(DEVICE_SRCS) $(GEN_C); do \
	  o=$(BUILD)/arm/$$(basename $$f .c).o; \
	  arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -std=c11 -ffunction-sections -fdata-sections \
	    -DCELLAR_DEVICE -DNDEBUG $(INCLUDES) -idirafter /usr/include -c $$f -o $$o || exit 1; \
	  arm-none-eabi-size $$o | awk -v m=$$f 'NR==2{printf "%-28s %8d %8d %8d\n", m, $$1, $$2, $$3}'; \
	done

clean:
	rm -rf $(BUILD)

.PHONY: all deps run test deps-check powerloss bench bench-fs bench-net bench-push fuzz fuzz-svc size install clean FORCE
FORCE:
.PRECIOUS: $(BUILD)/san/tests/%.o $(BUILD)/rel/tests/%.o

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
