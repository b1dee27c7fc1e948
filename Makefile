# vitamin-nas: one environment (.venv), made from nothing by `make install`; every target builds on it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test test-fast lint bench gpu-wheels
.DEFAULT_GOAL := install

$(BIN)/vitamin-nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/vitamin-nas
	@echo "vitamin-nas is installed in $(VENV): activate it with  . $(VENV)/bin/activate  (or run $(BIN)/vitamin-nas)"

quickstart: install
	$(BIN)/vitamin-nas quickstart

# Whole test modules on 2 workers, the slowest first (tests/conftest.py), and torch on one thread in every test
# process: the suite is CPU-bound on 2 cores (Ray, its trial processes and their imports), and a third worker only
# oversubscribes them (measured at the same commit on 2 idle cores: 568 s and 607 CPU-s on 2 workers, 725 s and
# 796 CPU-s on 3). On its tiny tensors a second torch thread costs CPU without saving time (test_train,
# test_models, test_train_resume: 76.6 CPU-s on one thread against 91.9 on two, measured in one cgroup). A test
# that wants more threads sets them itself.
# The modules that read the shared search (tests/conftest.py: SHARED_SEARCH_MODULES) go to one worker together.
test: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The unit tier, as `make test` runs it less the tests marked slow, ray (a Ray instance in the test process) and
# subprocess (real processes: the console script, torchrun, killed runs); tests/conftest.py sets the last two from
# the fixtures a test uses. `make test` stays the whole suite.
FAST := not slow and not ray and not subprocess
test-fast: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "$(FAST)"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/cost_model.py

# The wheels benchmarks/gpu_check.sh installs on a GPU machine without network (Python 3.12, x86-64, 64 MiB of
# files with the checkout): the project's dependencies that such a machine lacks (.library/device/KINDS.md lists
# what it has: torch, torchvision, numpy, pandas, pyarrow, scipy, matplotlib, tensorboard, pyyaml, pillow, tqdm,
# huggingface-hub, safetensors, regex, portalocker, tabulate, typing-extensions, ...), less Ray (no wheel of it fits;
# `vitamin-nas train` never imports it), plus setuptools to build the project from the checkout there; and
# webdataset 0.2.86 apart, for open_clip_train. The versions are the ones this project's tests run with; timm travels
# too although the machine has one, since nas/models/tower.py imports its internals (tests/test_gpu_check.py checks
# that the pins of timm and open_clip_torch are the test environment's). They travel with the device tool's
# `carry: ["benchmarks/gpu-wheels"]` (README.md, "The GPU check").
GPU_WHEELS := benchmarks/gpu-wheels
GPU_BINARY_WHEELS := timm==1.0.31 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==1.0.2 \
	braceexpand==0.1.7 optuna==5.0.0 alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0 yacs==0.1.8 \
	termcolor==3.3.0 setuptools==84.2.1
GPU_SDIST_WHEELS := fvcore==0.1.5.post20221221 iopath==0.1.10  # pure Python, no wheel on PyPI: built here
PIP_FOR_GPU := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-wheels:
	rm -rf $(GPU_WHEELS)
	mkdir -p $(GPU_WHEELS)/deps $(GPU_WHEELS)/open_clip_train
	$(PYTHON) -m pip download --quiet --disable-pip-version-check $(PIP_FOR_GPU) -d $(GPU_WHEELS)/deps \
		$(GPU_BINARY_WHEELS)
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps -w $(GPU_WHEELS)/deps $(GPU_SDIST_WHEELS)
	$(PYTHON) -m pip download --quiet --disable-pip-version-check $(PIP_FOR_GPU) -d $(GPU_WHEELS)/open_clip_train \
		webdataset==0.2.86
	@total=$$( (git ls-files -z --cached --others --exclude-standard; find $(GPU_WHEELS) -type f -print0) \
		| du -cb --files0-from=- | tail -1 | cut -f1); \
	echo "gpu-wheels: $$(du -sh $(GPU_WHEELS) | cut -f1) of wheels in $(GPU_WHEELS); with the checkout" \
		"$$((total / 1048576)) MiB of the 64 MiB a GPU machine takes"; \
	test $$total -lt 67108864 || { echo "gpu-wheels: over 64 MiB"; exit 1; }
	@echo "gpu-wheels: name $(GPU_WHEELS) in the device call's carry (README.md, \"The GPU check\")"
