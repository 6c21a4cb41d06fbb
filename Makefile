# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= local,studio,dev

.PHONY: install demo test test-fast lint studio serve doctor bench clean redis-server postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned through constraints.txt so pip takes the local CPU build
# instead of downloading several GB of CUDA packages.
# With the `local` extra, llama.cpp's llama-server is built once into the cache
# (~10 minutes on 2 cores); first use would build it otherwise.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -c constraints.txt -e ".[$(EXTRAS)]"
	$(if $(findstring local,$(EXTRAS)),$(BIN)/synthgraph build-server)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The Redis cache tests start their own redis-server: installed from Debian's package here
# when missing and we are root; otherwise they skip, saying why.
redis-server:
	@command -v redis-server >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; } || \
	  echo "redis-server not found: the Redis cache tests will skip (install it: sudo apt-get install redis-server)"

# The Postgres checkpoint tests start their own server from Debian's postgresql-15 binaries
# (/usr/lib/postgresql/15/bin, not on PATH): installed here when missing and we are root.
postgres:
	@[ -x /usr/lib/postgresql/15/bin/postgres ] || command -v postgres >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15; } || \
	  echo "postgres not found: the Postgres checkpoint tests will skip (install it: sudo apt-get install postgresql-15)"

# The two-node Ray cluster tests run in a process of their own: a process that already ran
# Ray in-process (the Ray dedup and Ray Train tests) cannot start actors on a new cluster.
test: $(STAMP) redis-server postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not cluster"
	$(BIN)/python -m pytest -m cluster

test-fast: $(STAMP) redis-server postgres
	$(BIN)/python -m pytest -m "not integration and not studio and not cluster"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

studio: $(STAMP)
	$(BIN)/langgraph dev --no-browser

serve: $(STAMP)
	$(BIN)/synthgraph serve

doctor: $(STAMP)
	$(BIN)/synthgraph doctor

# Peers install with the torch pin; mostlyai-engine pulls torchvision/torchaudio,
# which have no CPU build here and are not needed.
bench: $(STAMP)
	$(BIN)/pip install -c constraints.txt -e ".[bench]"
	-$(BIN)/pip uninstall -y torchvision torchaudio
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/tabular.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/llm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
