# The two commands of the quick start. Both install what is missing, then build.
#   make demo   trains a model on the default corpus and shows it learning
#   make test   runs the whole test suite with ctest
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup build demo test fuzz bench clean format

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
