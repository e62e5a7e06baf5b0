# The two commands of the quick start. Both install what is missing, then build.
#   make demo   trains a model on the default corpus and shows it learning
#   make test   runs the whole test suite with ctest
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup build demo test test-asan fuzz bench clean format

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/moe demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite again with AddressSanitizer and UndefinedBehaviorSanitizer (MOE_SANITIZE in
# CMakeLists.txt), in its own build directory. Debug: MOE_DCHECK and assert() stay on (the
# option itself sets -O1). No benchmarks: they test nothing. OMP_WAIT_POLICY=passive: two
# tests at once, each with an OpenMP thread per core, spin against each other (a training
# run took 16.5 s with spinning threads, 10.4 s without); results do not depend on it.
test-asan: setup
	@cmake -S . -B $(ASAN_BUILD) -DMOE_SANITIZE=ON -DMOE_BUILD_BENCH=OFF \
	    -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && OMP_WAIT_POLICY=passive ctest --output-on-failure -j $(JOBS)

# Long fuzzing runs (`make test` fuzzes 30 s each): every harness of fuzz/ for FUZZ_SECONDS,
# or only those named in FUZZ. The corpus grows in build-fuzz/work/NAME/corpus from run to
# run; what a run finds is listed at its end (fuzz/run.sh).
FUZZ_SECONDS ?= 300
FUZZ ?= safetensors config bpe_tokenizer
fuzz: setup
	@status=0; for h in $(FUZZ); do fuzz/run.sh $$h $(FUZZ_SECONDS) || status=1; done; exit $$status

bench: build
	$(BUILD)/bench/gemm

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD)
