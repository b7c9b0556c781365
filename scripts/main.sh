#!/usr/bin/env bash
# Set up (if needed), start the embedded stack and run the main job: a real fine-tune of the
# embedded model on the bundled dataset, then base vs fine-tuned answers side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tuneforge demo "$@"
