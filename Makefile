# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := dogops flows tasks model_code deployments dogops_cli

.PHONY: venv demo test lint typecheck serve bench stop clean

venv: $(STAMP)

# torch/torchvision and boto3 are pinned in pyproject.toml: unpinned, pip pulls several GB
# of torch or backtracks for minutes through botocore releases.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/dogops demo

test: venv lint typecheck
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests bench

typecheck: venv
	$(BIN)/mypy $(PACKAGES)

serve: venv
	$(BIN)/python -m deployments.serve

bench: venv
	$(BIN)/python -m bench.run_all

stop: venv
	$(BIN)/dogops stop

clean: stop
	rm -rf .dogops
