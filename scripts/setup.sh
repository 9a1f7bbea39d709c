#!/usr/bin/env bash
# Sets up amp-tf on a fresh machine: the offline Fashion-MNIST files (Debian's
# dataset-fashion-mnist, installed with apt when run as root) and a virtual
# environment in .venv with the pinned requirements and amp-tf itself.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
FMNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's dataset-fashion-mnist (about 30 MB) ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] Fashion-MNIST files not found in $FMNIST_DIR." >&2
    echo "[setup] Run: sudo apt-get install dataset-fashion-mnist" >&2
    echo "[setup] (or pass --data-dir DIR holding the four *-ubyte.gz files)." >&2
  fi
fi
# TrueType fonts for the font_letters OOD set (amp_tf/data/letters.py).
FONT_FILES="/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf /usr/share/fonts/truetype/freefont/FreeSans.ttf"
FONTS_OK=1
for f in $FONT_FILES; do [ -f "$f" ] || FONTS_OK=0; done
if [ "$FONTS_OK" = 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing fonts for font_letters (fonts-dejavu-core fonts-liberation fonts-freefont-ttf) ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core fonts-liberation fonts-freefont-ttf >/dev/null
  else
    echo "[setup] fonts for the font_letters OOD set not found under /usr/share/fonts." >&2
    echo "[setup] Run: sudo apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf" >&2
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version) ..."
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "[setup] done: .venv is ready."
