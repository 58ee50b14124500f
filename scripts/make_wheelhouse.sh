#!/usr/bin/env bash
# Builds a wheelhouse for installing dqnn on a host without registry access (a GPU/TPU host that
# already has JAX). Run it, from the repository root, on a machine with internet and the same
# Python version, OS and CPU architecture as the host (the host's container image, say):
#
#   scripts/make_wheelhouse.sh [OUT_DIR]            # default: wheelhouse/
#
# then copy OUT_DIR and the repository to the host and run there, in the repository root:
#
#   pip install --no-index --find-links=OUT_DIR -r requirements.txt
#   pip install --no-index --find-links=OUT_DIR -e .
#
# jax and jaxlib are left out (the host's accelerator build stays as it is) unless WITH_JAX=1.
set -euo pipefail
out=${1:-wheelhouse}
mkdir -p "$out"
pip download --quiet --dest "$out" -r requirements.txt setuptools wheel
# A few dependencies publish only source archives; they are pure Python, so build them once here.
shopt -s nullglob
for archive in "$out"/*.tar.gz "$out"/*.zip; do
  pip wheel --quiet --no-deps --wheel-dir "$out" "$archive"
  rm "$archive"
done
if [ "${WITH_JAX:-0}" != 1 ]; then
  rm -f "$out"/jax-[0-9]*.whl "$out"/jaxlib-[0-9]*.whl
fi
echo "$(ls "$out" | wc -l) wheels in $out ($(du -sh "$out" | cut -f1))."
