# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests.
# Each creates its own virtual environment in $(VENV) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# `accelerate launch` exports OMP_NUM_THREADS=1 unless told otherwise: on a CPU the one training
# process should use every core
THREADS ?= $(shell nproc 2>/dev/null || echo 1)
# torch is installed first from the pinned wheels this project is developed against; override
# TORCH_SPEC (e.g. TORCH_SPEC="torch torchvision") to use your own CUDA build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo demo-uniref test test-all fuzz lint docs clean

setup: $(VENV)/.installed

# Meta's SAM 2 (the sam2 extra, in dev) is a source-only package: it is built against the torch installed
# first, without its CUDA extension (not needed), before the package's own extras
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH_SPEC)
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation "sam2>=1.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# the default training run (the Lite0 stand-in SAM + offline MiniLM on synthetic data, both stages) and its
# held-out evaluation; writes outputs/default/{metrics.json,overlays/,tracked_video.gif,adapter/,sam_lite0.safetensors}
demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--num_cpu_threads_per_process $(THREADS) --mixed_precision no --dynamo_backend no recipes/train_sam_unifusion.py

# the full UniRef++ model's default run (small preset on the pretrained Lite0 backbone, image + video stages) on the
# same synthetic data and held-out split; writes outputs/uniref_default/{metrics.json,overlays/,tracked_video.gif,model/}
demo-uniref: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 \
		--num_cpu_threads_per_process $(THREADS) --mixed_precision no --dynamo_backend no recipes/train_uniref.py

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-all: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# the property-based fuzz tests (tests/fuzz) in their long profile: random, FUZZ_SCALE x 500 examples per test (about 12,000 in all)
# (make test runs the same tests in a fast, derandomized profile); prints and writes the examples tried per entry point
FUZZ_SCALE ?= 1
fuzz: setup
	HF_HUB_OFFLINE=1 HYPOTHESIS_PROFILE=long FUZZ_SCALE=$(FUZZ_SCALE) FUZZ_REPORT=outputs/fuzz_report.json \
		$(PY) -m pytest -q -p no:randomly tests/fuzz

# ruff, and the architecture's import contracts (pyproject.toml [tool.importlinter]: the core imports no
# family, the families are independent, nothing imports a front end, no import cycles)
lint: setup
	$(VENV)/bin/ruff check unifusion_sam recipes eval tests benchmarks
	$(VENV)/bin/lint-imports

# the documentation site (MkDocs Material + an API reference from the docstrings) into site/; --strict makes
# a broken link or reference an error
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) outputs .pytest_cache site
