#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real services: S3 (weed mini),
# Redis (the machine's on 127.0.0.1:6379, else a valkey-server it starts), SQLite and
# PostgreSQL (127.0.0.1:5432, when it answers; required under CI), the real SmolLM2 model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
