#!/usr/bin/env bash
# Everything a fresh Debian machine needs: the Fashion-MNIST data package, Chromium (for the demo's
# browser test), CPU torch, hf_unlearn with its test extra (which brings the demo's Gradio).
# Safe to run again: installed pieces are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  echo "==> installing the Debian package dataset-fashion-mnist (official Fashion-MNIST IDX files, MIT)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

# Headless Chromium + its WebDriver for the demo's real-browser test (tests/test_demo.py).
if ! dpkg -s chromium >/dev/null 2>&1 || ! dpkg -s chromium-driver >/dev/null 2>&1; then
  echo "==> installing the Debian packages chromium and chromium-driver (the demo's browser test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi

PYTHON="${PYTHON:-python3}"
# torch first, pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA
# build. 2.13.0 is the CPU build this machine's pip serves; elsewhere install torch your usual way
# first and this line leaves it alone.
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "==> installing torch==2.13.0"
  "$PYTHON" -m pip install -q torch==2.13.0
fi
echo "==> installing hf_unlearn with its test extra"
"$PYTHON" -m pip install -q -e ".[test]"
