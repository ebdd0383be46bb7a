#!/usr/bin/env bash
# The wheels `python -m tresnet_nb gpu-check` needs on a CUDA machine that has torch, timm and the scientific stack
# but no fastai and no package registry (tresnet_nb/bundle.py installs them there with pip --no-index --no-deps).
# Run it where PyPI is reachable; it writes gpu_bundle/ (git-ignored) at the repository root, at most 40 MiB.
# Usage: bash tools/gpu_bundle.sh [--python-version 3.12] [--platform manylinux2014_x86_64]
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=3.12
PLATFORM=manylinux2014_x86_64
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --platform) PLATFORM="$2"; shift 2 ;;
    *) echo "unknown option $1; use --python-version X.Y or --platform TAG" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT=gpu_bundle
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
# fastai with --no-deps: of its requirements the check imports only these (spaCy and the rest would not fit);
# fastprogress 1.0.3 is the last release that does not import python-fasthtml's web stack.
# The versions are requirements.txt's (fastai) and the floors the rest were proven with.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform "$PLATFORM" --dest "$OUT.tmp" \
  "$(grep -E '^fastai==' requirements.txt)" fastcore==2.2.41 fasttransform==0.0.5 fastprogress==1.0.3 \
  fastdownload==0.0.7 plum-dispatch==2.9.0 beartype==0.23.1
size=$(du -sm "$OUT.tmp" | cut -f1)
if [ "$size" -gt 40 ]; then
  echo "gpu_bundle would be ${size} MiB, over the 40 MiB limit; nothing replaced" >&2
  rm -rf "$OUT.tmp"; exit 1
fi
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "wrote $OUT/ (${size} MiB):"
ls -1 "$OUT"
