# The two set-up commands of the README: `make demo` and `make test`.
# Both create ./.venv with everything needed on first run; later runs reuse it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy streamkit tests examples bench  # streamkit/connectors links to connectors/

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(BIN)/streamkit demo --duration 60

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/query_engine.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache

# Install the test servers (LocalStack, kinesalite, Tansu) into .cache/servers; idempotent.
.PHONY: servers
servers: $(STAMP)
	bash .ci/install-servers.sh
