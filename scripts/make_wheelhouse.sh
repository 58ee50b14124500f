#!/usr/bin/env bash
# Builds a wheelhouse for installing dqnn on a host without registry access (a GPU/TPU host that
# already has JAX). Run it on any machine with internet, from the repository root:
#
#   scripts/make_wheelhouse.sh [OUT_DIR]            # default: wheelhouse/
#
# then copy OUT_DIR and the repository to the host and run there, in the repository root:
#
#   pip install --no-index --find-links=OUT_DIR -r requirements.txt
#   pip install --no-index --find-links=OUT_DIR -e .
#
# The wheels are for the host's Python and platform: PYTHON_VERSION (default 3.12) and
# PLATFORM (default manylinux2014_x86_64; e.g. manylinux2014_aarch64). jax and jaxlib are left
# out (the host's accelerator build stays as it is) unless WITH_JAX=1.
set -euo pipefail
out=${1:-wheelhouse}
python_version=${PYTHON_VERSION:-3.12}
platform=${PLATFORM:-manylinux2014_x86_64}
mkdir -p "$out"
download() {
  pip download --quiet --only-binary=:all: --python-version "$python_version" \
      --platform "$platform" --dest "$out" "$@"
}
download -r requirements.txt
download setuptools wheel  # What `pip install -e .` builds dqnn with.
if [ "${WITH_JAX:-0}" != 1 ]; then
  rm -f "$out"/jax-[0-9]*.whl "$out"/jaxlib-[0-9]*.whl
fi
echo "$(ls "$out" | wc -l) wheels in $out for Python $python_version on $platform."
