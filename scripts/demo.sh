#!/usr/bin/env bash
# The run command (README): installs llmpack, packages the default model
# (SmolLM2-135M-Instruct) on first use and serves the chat demo on 127.0.0.1.
# Everything goes into .venv; `source .venv/bin/activate` puts `llmpack` on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/llmpack demo "$@"
