# Two commands on a fresh machine: `make demo` (the whole RLHF pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FORTUNES := /usr/share/games/fortunes

.PHONY: venv corpus test-packages lint test test-cpu-classes demo demo-safety demo-loop schemas clean

venv: $(VENV)/.installed

# torch first, from its CPU wheel: installed afterwards, the [train] range would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,dev,openvino,feedback]"
	touch $@

corpus:
	@test -d $(FORTUNES) || (apt-get update -qq && apt-get install -y -qq fortunes >/dev/null)

# The labeling app's tests drive Debian's chromium and start Debian's PostgreSQL server.
test-packages:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver -a -n "$(wildcard /usr/lib/postgresql/*/bin/initdb)" \
		|| (apt-get update -qq && apt-get install -y -qq chromium chromium-driver postgresql >/dev/null)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv corpus test-packages lint
	$(VENV)/bin/pytest
	$(MAKE) test-cpu-classes

# The backend tests once per CPU class the project meets (Intel AMX, AMD AVX-512-bf16 only,
# neither), whatever CPU runs CI: `auto` and the parity gate must hold on each.
test-cpu-classes: venv
	for class in amx,avx512_bf16 avx512_bf16 none; do \
		echo "== backend tests with REWARD_SERVICE_CPU_FEATURES=$$class"; \
		REWARD_SERVICE_CPU_FEATURES=$$class $(VENV)/bin/pytest -q tests/backends || exit 1; \
	done

demo: venv corpus
	$(PY) scripts/demo.py

# PPO-Lagrangian against a cost model, with real third-party scorers as gold (docs/safety.md).
demo-safety: venv corpus
	$(PY) -m pip install -q -e ".[safety]"
	$(PY) scripts/demo_safety.py

# Issue 14's labeling loop: three rounds of sample, label, retrain, publish, PPO (reuses runs/demo).
demo-loop: venv corpus
	$(PY) scripts/demo_loop.py --fresh

schemas: venv
	$(VENV)/bin/reward-service schemas

clean:
	rm -rf $(VENV) runs
