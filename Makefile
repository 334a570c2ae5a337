# The two set-up commands of the README: `make demo` and `make test`.
# Both create ./.venv with everything needed on first run; later runs reuse it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The engine and the connector distributions, editable, with every extra the suite needs.
PACKAGES := -e connectors/kinesis -e connectors/kafka -e '.[dev]'
# Tests that need no server: everything not marked integration.
UNIT := -m 'not integration' -p no:cacheprovider

.PHONY: venv test check lint unit demo bench clean servers mutation

$(STAMP): pyproject.toml connectors/kinesis/pyproject.toml connectors/kafka/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PACKAGES)
	touch $(STAMP)

venv: $(STAMP)

# ruff + mypy --strict on the whole tree (engine, connectors, tests, examples, bench).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .

lint: check

# The tests that need no server, in well under a minute.
unit: $(STAMP)
	$(BIN)/python -m pytest $(UNIT) $(SEED_ARG) $(PYTEST_ARGS)

# TEST_WORKERS=N spreads the suite over N pytest-xdist processes (each starts its own
# servers on free ports, lazily; --dist loadscope keeps a module on one worker, so module
# fixtures such as the Spark runs of the differential suites run once). The default, 0, runs
# it in this process: a 2-worker run beside other load has not passed yet (see the note).
TEST_WORKERS ?= 0
# Property tests draw from one fixed seed here, so a run of the suite is repeatable (a
# failure is a bug to fix, never a lucky draw); `HYPOTHESIS_SEED=` (empty) explores anew.
HYPOTHESIS_SEED ?= 0
SEED_ARG = $(if $(HYPOTHESIS_SEED),--hypothesis-seed=$(HYPOTHESIS_SEED))
test: check
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=40 $(SEED_ARG) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

# Mutation testing of the engine's core (mutmut on a copy under .cache/mutation, niced):
# a score per module and every surviving mutant; not part of `make test`.
# MUTATION_ARGS="--module windows --reuse" narrows a run while killing survivors.
# Timeouts (a test over its CPU budget) count as detected, in their own column.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation.run $(MUTATION_ARGS)

demo: $(STAMP)
	$(BIN)/streamkit demo --duration 60

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/query_engine.py

bench-peers: $(STAMP)
	$(BIN)/python bench/kcl_peers.py && $(BIN)/python bench/spark_kinesis.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache

# Install the test servers (LocalStack, kinesalite, Tansu, Apache Kafka) and build the Java
# peers (KCL consumer, KPL producer) into .cache/servers; idempotent.
servers: $(STAMP)
	bash .ci/install-servers.sh
