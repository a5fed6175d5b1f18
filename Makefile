# onnxship: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned here: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.onnxship-installed

.PHONY: demo test lint bench venv clean check-extras

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	$(PIP) install -q --disable-pip-version-check "$(TORCH_PIN)" -e ".[torch,data,optimize,vision,mlflow,notify,triton,logs,serve,families,dev]"
	@touch $(STAMP)

# The DeepLog system end to end on the loghub BGL sample: Drain3 parse -> vocab + windows -> train (a few CPU
# seconds) -> export, verify (100% top-g agreement), release bundle with portable vocab -> detect from the ONNX
# release (no torch), scored against the alert labels beside PyTorch. Without the sample, ship the bundled example
# (examples/deeplog/onnxship.yaml). Every step fails the target (set -e). It ends with what was built, where
# report.html is, and the two commands to try next (serve the release, send it a request).
DEMO_LOG ?= ../shared/data/loghub/BGL_2k.log
OSHIP := $(VENV)/bin/onnxship
demo: $(STAMP)
	@set -e; \
	if [ -f "$(DEMO_LOG)" ]; then \
	  VENV=$(VENV) bash scripts/components.sh drain3; \
	  echo "== demo: DeepLog on $(DEMO_LOG)"; \
	  $(OSHIP) recipes deeplog parse --log "$(DEMO_LOG)" --format bgl --out work/parsed.parquet; \
	  $(OSHIP) recipes deeplog build --parsed work/parsed.parquet --out-dir work --window 10; \
	  $(OSHIP) recipes deeplog train --seq work/sequences.parquet --vocab work/vocab.json --out work/deeplog.pt \
	    --epochs 3 --threads 2; \
	  $(OSHIP) recipes deeplog ship --model work/deeplog.pt --vocab work/vocab.json --portable; \
	  $(OSHIP) recipes deeplog detect --release releases/deeplog/latest --parsed work/parsed.parquet; \
	else \
	  echo "== demo: $(DEMO_LOG) not found (loghub sample missing); shipping examples/deeplog/onnxship.yaml instead"; \
	  $(OSHIP) ship --config examples/deeplog/onnxship.yaml; \
	fi; \
	$(OSHIP) list releases/deeplog; \
	release=$$(cat releases/deeplog/LATEST 2>/dev/null || readlink releases/deeplog/latest); \
	echo; \
	echo "== demo done: built releases/deeplog/$$release (verified ONNX model, report.json, report.html, golden.npz)"; \
	echo "   report:  file://$(CURDIR)/releases/deeplog/latest/report.html"; \
	echo "   next:    $(OSHIP) serve --releases releases --port 8000"; \
	echo "            curl -s localhost:8000/v2/models/deeplog/infer -H 'content-type: application/json' \\"; \
	echo "              -d '{\"inputs\": [{\"name\": \"input_sequence\", \"shape\": [1, 10], \"datatype\": \"INT64\", \"data\": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}]}'"

test: $(STAMP)
	@VENV=$(VENV) bash scripts/components.sh
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

# Every benchmark writes its JSON into benchmarks/results/ (minutes in total; run on a quiet machine).
bench: $(STAMP)
	@VENV=$(VENV) bash scripts/components.sh drain3 wrk
	set -e; for b in export_time verify_throughput bench_variants serve_throughput doctor_train_log deeplog_loghub; do \
	  echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py; done

check-extras:
	bash scripts/check_extras.sh

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info out releases
