# The two commands of the README: `make demo` and `make test`. Both create and
# reuse a virtual environment that sees the system's packages (a torch already
# installed, a CUDA build say, is used rather than replaced), install torch only
# if it is missing, then the other dependencies, then build the extension.

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
SOURCES := setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test build bench clean gpu-check prebuilt

demo: $(VENV)/.built
	$(VENV)/bin/fastgen demo

test: $(VENV)/.built
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(VENV)/.built
	$(PY) -m bench

build: $(VENV)/.built

$(PY):
	python3 -m venv --system-site-packages $(VENV)

$(VENV)/.deps: $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install numpy ninja setuptools wheel pytest pytest-benchmark tqdm matplotlib scikit-learn
	$(PY) -m pip install triton || echo "Triton could not be installed: its tests will be skipped"
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	FASTGEN_BUILD_EXT=0 $(PY) -m pip install --no-build-isolation --no-deps -e .
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q build_ext --inplace
	touch $@

# One bounded check on a GPU machine (tools/gpu_check.sh): build (or the carried .prebuilt/),
# a smoke test of every op, the CUDA and Triton tests, a short benchmark, time-boxed in a 450 s
# budget; results and a summary table in gpu_check_out/. GPU_CHECK_PY is the python of
# the CUDA torch there (not .venv's).
GPU_CHECK_PY ?= python3

gpu-check:
	PY=$(GPU_CHECK_PY) bash tools/gpu_check.sh

# The extensions built with GPU_CHECK_PY's CUDA torch (FASTGEN_CUDA=1, sm_90) into .prebuilt/,
# leaving fastgen/ alone: carry .prebuilt to the GPU machine and gpu-check skips its build.
prebuilt:
	PY=$(GPU_CHECK_PY) bash tools/gpu_check.sh prebuild

clean:
	rm -rf build fastgen/_C*.so fastgen/_cpu_*.so $(VENV)/.built
