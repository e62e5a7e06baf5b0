#!/usr/bin/env bash
# Installs every system dependency of moe.cpp, and only what is missing, so it is safe to
# run before every build. Debian packages, plus two PyPI packages that Debian 12 does not
# package (safetensors, tensorboard) in a project-local virtual environment, used only by the
# tests that check our files load in those tools.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    g++ cmake make pkg-config
    libdnnl-dev                    # oneDNN: the GEMM backend
    ocl-icd-opencl-dev             # OpenCL, required by libdnnl-dev's CMake config (only a
                                   # Recommends, which --no-install-recommends leaves out)
    libopenmpi-dev openmpi-bin     # MPI for distributed runs
    iproute2                       # ip netns: the two-host MPI tests (skipped without it)
    libgtest-dev libgmock-dev      # tests
    libbenchmark-dev               # microbenchmarks
    clang libclang-rt-14-dev       # fuzzing and sanitizer builds (libFuzzer, ASan/UBSan runtimes)
    libomp-dev                     # OpenMP for clang builds
    llvm                           # llvm-symbolizer: readable sanitizer stack traces
    nlohmann-json3-dev             # config files and safetensors headers
    zlib1g-dev                     # gzip-compressed IDX images
    libpng-dev                     # PNG image folders (vision recipe) and sample grids
    python3 python3-torch python3-numpy python3-venv python3-pip   # PyTorch fixtures
    python3-sklearn                # tabular recipe: gradient-boosting baseline
    fortunes                       # text corpus
    dataset-fashion-mnist          # image data
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python's safetensors, tensorboard and pyarrow packages are not packaged by Debian 12; the
# interoperability tests load our files with them from a venv that still sees Debian's torch
# and numpy. pyarrow reads the tabular recipe's parquet data; recent releases need NumPy 2,
# Debian 12 has 1.24, so it stays below 19 (18.1 works with 1.24).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import safetensors, tensorboard, pyarrow" 2>/dev/null; then
    echo "setup: creating .venv with the safetensors, tensorboard and pyarrow packages"
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/python -m pip install -q safetensors tensorboard "pyarrow<19"
fi
echo "setup: all dependencies present"
