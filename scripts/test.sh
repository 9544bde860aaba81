#!/usr/bin/env bash
# The test command (README): installs everything a fresh Debian 12 machine needs
# (scripts/setup.sh --test, into .venv), then lints and runs the Python and JavaScript
# test suites. Extra arguments go to pytest; LLMPACK_LONG_TESTS=1 adds the long runs
# (SmolLM2 through WebGPU on SwiftShader, the benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
source .venv/bin/activate

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

ruff check .
pytest -q -rs "$@"  # not `python -m`: the installed package, not the cwd, is imported
(cd runtime_js && npm test)
if [ "${LLMPACK_LONG_TESTS:-}" = 1 ]; then (cd runtime_js && npm run test:long); fi
