#!/usr/bin/env bash
# The main job: set up .venv on a fresh machine, generate the demo data, then train, evaluate and infer
# every bundle with its configs/demo.json override, and write runs/demo/report.md (+ PNG figure grids).
# Extra arguments go to scripts/run_demo.py (e.g. --bundles amcgan_contrast_mri).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
exec .venv/bin/python scripts/run_demo.py "$@"
