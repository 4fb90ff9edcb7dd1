# Two entry points for a fresh machine:
#   make quickstart   install into .venv, start a loopback Ray head, submit configs/quickstart.yaml
#   make test         install into .venv, run the test suite
#   make image-example  write the .npy files configs/image_file_example.yaml trains on
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
DEEPSPEED_VERSION := 0.19.8

.PHONY: install quickstart test test-unit clean-venv device-wheels image-example

install: $(VENV)/.installed

# torch first (pinned, so pip takes the CPU wheel here instead of CUDA builds), then
# DeepSpeed without build isolation (its setup.py imports the torch just installed),
# then the project itself.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

quickstart: install
	$(BIN)/python -m launch.quickstart configs/quickstart.yaml

image-example: install
	$(BIN)/python -m launch.image_example data/image_file_example

test: install
	$(BIN)/python -m pytest -q --durations=25  # the slowest tests, to keep the suite under 20 minutes

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

# Wheels for benchmarks/device_check.py on a bare CUDA machine (docs/gpu.md), into wheels/.
device-wheels: install
	PIP=$(BIN)/pip benchmarks/device_wheels.sh wheels

clean-venv:
	rm -rf $(VENV)
