#!/usr/bin/env bash
# Fresh machine to result: set up, then train a base ResNet on Fashion-MNIST, untrain all 10
# classes in one round, evaluate every row, export a model without one class and check it with
# transformers' pipeline. Offline. Writes runs/quickstart/ (report.md, metrics, models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "${PYTHON:-python3}" recipes/quickstart.py "$@"
