#!/usr/bin/env bash
# The test command (README): installs everything a fresh Debian 12 machine needs, then
# runs the Python and JavaScript test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

python3 -m pytest -q -rs "$@"
(cd runtime_js && npm test)
