# Quickstart: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ALERT := alerts/2011-08-12-secure-communities

.PHONY: demo test lint bench clean

$(BIN)/newsletter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-deps: $(BIN)/newsletter
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: $(BIN)/newsletter
	$(BIN)/newsletter build $(ALERT)
	$(BIN)/newsletter check $(ALERT)
	$(BIN)/newsletter send $(ALERT) --to recipients/sample.csv --yes
	@echo
	@echo "Preview it in a browser:  $(BIN)/newsletter preview $(ALERT)"

test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

bench: $(BIN)/newsletter
	$(BIN)/python benchmarks/bench_send.py

clean:
	rm -rf build outbox newsletter.db newsletter.db-wal newsletter.db-shm newsletter.db.send-lock newsletter.db.flight-* newsletter.db.backups .pytest_cache
