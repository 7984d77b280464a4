# Quick start: `make demo` (build, verify and benchmark the shipped tiny model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[data,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deploycc build --model tiny --target all
	$(VENV)/bin/deploycc verify artifacts/tiny/onnx
	$(VENV)/bin/deploycc bench --model tiny --target eager,torchscript,onnx --batch-sizes 1,8,32,128 \
		--json artifacts/tiny/bench.json --markdown artifacts/tiny/bench.md --plot artifacts/tiny/bench.png

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf artifacts .pytest_cache
