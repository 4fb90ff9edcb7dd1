#!/usr/bin/env bash
# Wheels for running benchmarks/device_check.py on a bare CUDA machine (Python 3.12, PyTorch
# with CUDA, no internet, no Ray / DeepSpeed / pydantic): everything the check imports beyond
# torch, for cp312 manylinux x86_64, into an ignored folder (default: wheels/). DeepSpeed is
# built here as a pure-Python wheel (DS_BUILD_OPS=0: no compiled ops; the check needs none).
# Ray and mpi4py are not needed: the check runs one process over torch.distributed.
#
#   benchmarks/device_wheels.sh [DIR]          (WITH_NUMPY=1 adds numpy, if torch there lacks it)
#   make device-wheels
#
# Then on the machine: docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-wheels}
PIP=${PIP:-.venv/bin/pip}  # a pip whose Python has torch (DeepSpeed's setup.py imports it)
DEEPSPEED_VERSION=0.19.8
# The versions this project's .venv runs with (pydantic and pydantic_core go together).
PACKAGES=(pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_extensions==4.16.0
          typing_inspection==0.4.5 pyyaml==6.0.4 safetensors==0.8.0 tensorboardX==2.6.5 protobuf==7.36.2
          packaging hjson==3.1.0 einops==0.8.2 msgpack==1.2.4 ninja==1.13.2 psutil==7.2.2 py-cpuinfo==9.0.0
          tqdm==4.70.1)
if [ "${WITH_NUMPY:-0}" = 1 ]; then PACKAGES+=(numpy); fi

mkdir -p "$DIR"
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DIR" "${PACKAGES[@]}"
if ! ls "$DIR"/deepspeed-"$DEEPSPEED_VERSION"-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 "$PIP" wheel --quiet --no-deps --no-build-isolation -w "$DIR" "deepspeed==$DEEPSPEED_VERSION"
fi
wheel=$(ls "$DIR"/deepspeed-"$DEEPSPEED_VERSION"-*.whl)
case "$wheel" in
    *-py3-none-any.whl) ;;
    *) echo "error: $wheel is not a pure-Python (py3-none-any) wheel" >&2; exit 1 ;;
esac
ls -1 "$DIR"
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
echo "$DIR: $(ls "$DIR"/*.whl | wc -l) wheels, $((total / 1000000)) MB ($total bytes)"
if [ "$total" -gt 60000000 ]; then echo "error: over 60 MB" >&2; exit 1; fi
