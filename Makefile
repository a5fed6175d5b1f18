# onnxship: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned here: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.onnxship-installed

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	$(PIP) install -q --disable-pip-version-check "$(TORCH_PIN)" -e ".[torch,data,optimize,vision,mlflow,notify,triton,logs,serve,dev]"
	@touch $(STAMP)

# Ship the bundled DeepLog example: export (auto, gated) -> verify -> int8 variant (re-verified) -> release bundle
# (releases/deeplog/) -> Triton repository (out/triton_repo/); settings in examples/deeplog/onnxship.yaml.
demo: $(STAMP)
	$(VENV)/bin/onnxship ship --config examples/deeplog/onnxship.yaml
	$(VENV)/bin/onnxship list releases/deeplog

test: $(STAMP)
	@VENV=$(VENV) bash scripts/components.sh
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/export_time.py --out benchmarks/results/export_time.json

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info out releases
