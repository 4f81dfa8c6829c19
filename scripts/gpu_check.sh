#!/usr/bin/env bash
# The prepared GPU check (issue 14): one command, offline, about 3-5 minutes on one modern GPU
# (hard budget: --time_budget_s 450 by default). Writes gpu_check.json, gpu_check.md and
# gpu_check.log into --output_dir (default runs/gpu_check) and nothing else there: ViT-B/16,
# ConvNeXt-T and ResNet-50 (random weights, 100 classes); WF untraining step vs fine-tuning step
# in bf16 / fp16 / fp32; inference latency ratios at batch 1, 8, 64; a short untraining round
# under `accelerate launch --mixed_precision bf16`; peak GPU memory; targets met/missed.
# Needs torch, transformers, peft, accelerate (not datasets/evaluate) and Fashion-MNIST's IDX files.
#
# Here (any machine; on CPU use the smoke size):
#   bash scripts/gpu_check.sh --smoke --cpu               # tiny models, ~1 min on CPU (the test suite runs this)
#   bash scripts/gpu_check.sh                             # full size, on the GPU this machine has
#   bash scripts/gpu_check.sh --help                      # every option
#
# On a lent GPU machine (the `device` tool's `run`; only the repo's working tree travels, plus
# the ignored folders named in `carry`): first, HERE, in the repo root, once:
#   bash scripts/gpu_check.sh --prepare
# which copies Fashion-MNIST's training IDX files (26 MB) and a wheel of the peft version
# installed here (the GPU image's peft may differ) into .gpu_check_data/ (git-ignored). Then:
#   run(command="bash scripts/gpu_check.sh --output_dir $OUT",
#       carry=[".gpu_check_data"], timeout_s=600)
# The three report files come back from $OUT. Read gpu_check.md; put its tables, with the GPU's
# name, into recipes/README.md ("The CUDA path").
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore  # the GPU machine runs commands as root
PYTHON="${PYTHON:-python3}"
DATA=.gpu_check_data

if [ "${1:-}" = "--prepare" ]; then
  src="${HF_UNLEARN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz; do
    if [ ! -f "$src/$f" ]; then
      echo "gpu_check --prepare: $src/$f not found. Install the Debian package dataset-fashion-mnist" \
           "(apt-get install -y dataset-fashion-mnist) or set HF_UNLEARN_FASHION_MNIST_DIR." >&2
      exit 2
    fi
  done
  mkdir -p "$DATA/fashion-mnist" "$DATA/wheels"
  cp "$src/train-images-idx3-ubyte.gz" "$src/train-labels-idx1-ubyte.gz" "$DATA/fashion-mnist/"
  peft_version="$("$PYTHON" -c 'import peft; print(peft.__version__)')"
  rm -f "$DATA"/wheels/*.whl
  # peft is pure Python (py3-none-any): the same wheel installs on the GPU machine's Python.
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DATA/wheels" "peft==$peft_version"
  du -sh "$DATA"
  echo "Prepared $DATA. Now: run(command=\"bash scripts/gpu_check.sh --output_dir \$OUT\", carry=[\"$DATA\"], timeout_s=600)"
  exit 0
fi

# A carried peft wheel wins over the machine's own peft (installed into a temporary folder only).
if compgen -G "$DATA/wheels/*.whl" >/dev/null; then
  site="$(mktemp -d)/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$DATA"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${HF_UNLEARN_FASHION_MNIST_DIR:-}" ] && [ -f "$DATA/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
  export HF_UNLEARN_FASHION_MNIST_DIR="$PWD/$DATA/fashion-mnist"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PYTHON" recipes/gpu_check.py "$@"
