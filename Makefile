# spotq: build, test, debug (ASan+UBSan), fuzz, bench, install. CUDA=1 adds the GPU backend.
MODE    ?= release
BUILD   ?= build/$(MODE)
PREFIX  ?= /usr/local
CC      ?= cc
FUZZCC  ?= clang

NVCC_PATH := $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(NVCC_PATH),)
CUDA    ?= 0
else
CUDA    ?= 1
endif
NVCC    ?= $(NVCC_PATH)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

# MPI=1 (the default where mpicc is found): `mpirun -np N spotq ...` spreads calibration and eval over N
# processes (base/par.c). MPI=0: one process, the same binary as before MPI.
MPICC_PATH := $(shell command -v mpicc 2>/dev/null)
ifeq ($(MPICC_PATH),)
MPI     ?= 0
else
MPI     ?= 1
endif

PKGS    := libcjson libpcre2-8 libzstd openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Werror=implicit-function-declaration
CFLAGS_release := -O2 -march=x86-64-v3 -mtune=native
CFLAGS_debug   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow
LDFLAGS_debug  := -fsanitize=address,undefined,float-cast-overflow
CFLAGS  += -std=c11 -D_GNU_SOURCE -pthread -fPIC $(WARN) $(CFLAGS_$(MODE)) $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -llapacke -lm -ldl -pthread
LDFLAGS += $(LDFLAGS_$(MODE))
ifeq ($(MPI),1)
CFLAGS  += -DSQ_MPI $(shell mpicc --showme:compile)
LDLIBS  += $(shell mpicc --showme:link)
endif

# Sources: each folder is a layer; listed here once.
LIB_SRC  := $(wildcard base/*.c formats/*.c kernels/*.c kernels/cpu/*.c calib/*.c quant/*.c runtime/*.c)
CMD_SRC  := $(wildcard cmd/*.c)
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
TEST_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CMD_OBJ  := $(CMD_SRC:%.c=$(BUILD)/%.o)
# The CUDA code is a shared library that spotq loads (dlopen) only when a CUDA path is asked for, so
# CPU runs never load the CUDA libraries (hundreds of MiB, a fifth of a second at start-up).
ifeq ($(CUDA),1)
CUDA_OBJ := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CUDA_SO  := $(BUILD)/libspotq_cuda.so
# NCCL (kernels/cuda/coll.cu) comes with the CUDA toolkit install here (include/nccl.h, lib64/libnccl.so)
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib -lnccl -lcusolver -lcublas -lcudart -lstdc++
endif
NVFLAGS  ?= -O2 -std=c++17 -arch=sm_90 -fmad=false -Xcompiler -Wall -Xcompiler -fPIC

LIB      := $(BUILD)/libspotq.a
BIN      := $(BUILD)/spotq
TESTS    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
REPLAY   := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=$(BUILD)/tests/replay_%)
# With CUDA only: the GPTQ block benchmark (make bench-cuda, needs a GPU).
ifeq ($(CUDA),1)
CUDA_PROGS := $(BUILD)/bench/gptq_cuda
endif

.PHONY: all test debug test-debug fuzz bench install clean check-peers fixtures test-cuda bench-cuda
all: $(BIN) spotq $(CUDA_PROGS)

spotq: $(BIN)
	@ln -sf $(BIN) spotq

$(LIB): $(LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(BIN): $(CMD_OBJ) $(LIB) $(CUDA_SO)
	@echo "LD $@"
	@$(CC) $(LDFLAGS) -o $@ $(CMD_OBJ) $(LIB) $(LDLIBS)

$(CUDA_SO): $(CUDA_OBJ) $(LIB)
	@echo "LD $@"
	@$(CC) -shared $(LDFLAGS) -o $@ $(CUDA_OBJ) $(LIB) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu $(wildcard kernels/*.h kernels/cuda/*.h kernels/cuda/*.cuh) base/base.h formats/qpack.h
	@mkdir -p $(dir $@)
	@echo "NVCC $<"
	@$(NVCC) $(NVFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c tests/unit/check.h tests/unit/fixture.h $(LIB) $(CUDA_SO)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# The fuzz targets replayed over their saved corpora by a plain driver (no libFuzzer needed).
$(BUILD)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay.c $(LIB) $(LDLIBS)

test: $(BIN) $(TESTS) $(REPLAY)
	@BUILD=$(BUILD) sh tests/run.sh

# The CPU kernels' rates next to memcpy and OpenBLAS sgemm (make bench).
$(BUILD)/bench/kernels: bench/kernels.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/bench/gptq_cuda: bench/gptq_cuda.c $(LIB) $(CUDA_SO)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# Every backend op against the CPU reference, the GPU's included (needs a GPU: a missing one fails).
test-cuda: $(BUILD)/tests/test_backend_ops $(CUDA_PROGS)
ifneq ($(CUDA),1)
	@echo "make test-cuda: this build has no CUDA (nvcc not found; use make CUDA=1)"; exit 1
else
	SPOTQ_NEED_DEVICE=cuda $(BUILD)/tests/test_backend_ops
endif

# The GPTQ benchmark of one 7B- and one 70B-shaped block on the GPU (needs a GPU).
bench-cuda: $(CUDA_PROGS)
	$(BUILD)/bench/gptq_cuda

debug:
	$(MAKE) MODE=debug CUDA=0 all

test-debug:
	$(MAKE) MODE=debug CUDA=0 test

# libFuzzer builds: make fuzz, then build/fuzz/fuzz_NAME -max_total_time=600 tests/fuzz/corpus/NAME
# (the library is rebuilt with clang and coverage instrumentation into its own archive).
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all $(PKG_CFLAGS)
FUZZ_LIB    := build/fuzz/libspotq.a
FUZZ_OBJ    := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
fuzz: $(FUZZ_SRC:tests/fuzz/fuzz_%.c=build/fuzz/fuzz_%)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "FUZZCC $<"
	@$(FUZZCC) $(FUZZ_CFLAGS) -c -o $@ $<
$(FUZZ_LIB): $(FUZZ_OBJ)
	@rm -f $@
	@ar rcs $@ $^
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB)
	@echo "FUZZLD $@"
	@$(FUZZCC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LDLIBS)

bench: $(BIN) $(BUILD)/bench/kernels
	@sh bench/run.sh $(BIN)
	@sh bench/cpu.sh $(BIN)
	@sh bench/quant.sh $(BIN)

fixtures:
	for g in tests/fixtures/gen_*.py tests/bad/gen_bad.py tests/golden/gen_stories260K.py; do python3 $$g || exit 1; done

check-peers: $(BIN)
	sh scripts/check-peers.sh

install: $(BIN)
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/spotq

clean:
	rm -rf build spotq

-include $(LIB_OBJ:.o=.d) $(CMD_OBJ:.o=.d) $(CUDA_PROGS:=.d)
