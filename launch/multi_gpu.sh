#!/usr/bin/env bash
# Runs dqnn training on every GPU of this machine (one process, data parallel over all GPUs).
#
#   launch/multi_gpu.sh --config=configs/cifar100_resnet18_w2a2.py --workdir=$HOME/dqnn/r18_w2a2
#
# Assumes (see launch/README.md): run from the repository root, with jax[cuda12] installed in
# the active environment and the dataset prepared (or --config.download=True for CIFAR-100).
# CUDA_VISIBLE_DEVICES chooses the GPUs; the global batch must divide by their number.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 --config=configs/X.py --workdir=DIR [--config.field=value ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

# One process drives all local GPUs (a 'data' mesh over them), so no jax.distributed setup is
# needed; dqnn.data keeps TensorFlow, which only feeds the input pipeline, off the GPUs.
exec python -m dqnn.main "$@"
