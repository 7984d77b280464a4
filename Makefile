# Quick start: `make demo` (build, verify, predict and benchmark the shipped tiny model, ~2-3 min on 2 cores),
# `make test-fast` (the edit-run loop, ~2 min) and `make test` (the full suite).
VENV ?= .venv
PY := $(VENV)/bin/python
DEPLOYCC := $(VENV)/bin/deploycc
STAMP := $(VENV)/.installed
ART ?= artifacts
WORK ?= work

# Slow modules (exports of every target, subprocess-heavy CLI matrices, MD, fuzzing, real benches) that
# `test-fast` leaves to `test`, with the tests marked `slow`.
SLOW_MODULES := tests/targets/test_contract.py tests/targets/test_trt_preflight.py tests/targets/test_onnx_fp16.py \
	tests/runtime/test_predict.py tests/runtime/test_ase.py tests/md/test_run.py tests/test_bad_inputs.py \
	tests/test_presets.py tests/test_fuzz.py tests/test_select.py

.PHONY: demo test test-fast venv clean ani-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[data,dev,engines,cluster]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(DEPLOYCC) --version
	$(DEPLOYCC) build --model tiny --target eager,onnx,torchscript --out $(ART)
	$(DEPLOYCC) verify $(ART)/tiny/onnx
	$(DEPLOYCC) predict $(ART)/tiny/onnx --structures docs/examples/molecules.extxyz --out $(WORK)/labelled.extxyz
	$(DEPLOYCC) bench --model tiny --target eager,torchscript,onnx --out $(ART) --batch-sizes 1,16,64 \
		--min-iters 10 --min-seconds 0.3 --warmup 3 --rounds 2 --threads 1 \
		--json $(ART)/tiny/bench.json --markdown $(ART)/tiny/bench.md --plot $(ART)/tiny/bench.png

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(addprefix --ignore=,$(SLOW_MODULES))

clean:
	rm -rf $(ART) $(WORK) .pytest_cache

# The ANI-1x teacher's own interpreter: torchani 2.2.4 ships the ANI-1x weights but needs setuptools < 70
# (pkg_resources) and would pull another torch; deploycc talks to it through deploycc/data/ani_worker.py.
ANI_VENV ?= .venv-ani
ani-venv: $(ANI_VENV)/.installed

$(ANI_VENV)/.installed:
	test -x $(ANI_VENV)/bin/python || python3 -m venv $(ANI_VENV)
	$(ANI_VENV)/bin/pip install -q torch==2.13.0 numpy importlib-metadata lark-parser requests
	$(ANI_VENV)/bin/pip install -q --no-deps torchani==2.2.4 'setuptools<70'
	$(ANI_VENV)/bin/python -W ignore -c "import torchani, pkg_resources"
	touch $@
