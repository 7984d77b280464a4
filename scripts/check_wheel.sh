#!/usr/bin/env bash
# The installed package builds as the checkout does: build the wheel, install it into a fresh venv (the CPU
# torch first), then, from a folder outside the checkout, list the targets and build the shipped tiny model
# to ONNX with parity.  Presets, calibration sets and target settings must all come from the wheel.
# Usage: bash scripts/check_wheel.sh [WORKDIR]   (CI runs it after the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
echo "check_wheel: building the wheel into $work/dist"
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q torch==2.13.0
"$work/venv/bin/python" -m pip install -q "$work"/dist/deploycc-*.whl
mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
unset DEPLOYCC_HOME
"$work/venv/bin/deploycc" --help >/dev/null
"$work/venv/bin/deploycc" targets
"$work/venv/bin/deploycc" build --model tiny --target onnx --out "$work/elsewhere/artifacts"
"$work/venv/bin/deploycc" verify "$work/elsewhere/artifacts/tiny/onnx"
site=$("$work/venv/bin/python" -c 'import deploycc, pathlib; print(pathlib.Path(deploycc.__file__).parent)')
if [[ "$site" == "$repo"* ]]; then
  echo "check_wheel: deploycc was imported from the checkout ($site), not the wheel" >&2
  exit 1
fi
echo "check_wheel: ok (deploycc from $site)"
