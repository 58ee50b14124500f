#!/usr/bin/env bash
# Runs dqnn training as a SLURM batch job on GPU nodes: one process per GPU or one per node.
#
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_gpu.sh \
#       --config=configs/imagenet_resnet50_w2a2.py --workdir=/shared/dqnn/r50_w2a2
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_gpu.sh ...
#
# Submit from the repository root with its environment active (sbatch passes the environment
# on). JAX reads the process layout and coordinator from SLURM (--config.multi_host=True);
# dqnn gives a node's only process all of its GPUs. --workdir must be on storage every node
# shares. SIGTERM 5 minutes before the time limit saves a checkpoint; resubmit to resume.
#SBATCH --job-name=dqnn
#SBATCH --output=dqnn-%j.out
#SBATCH --signal=TERM@300
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [--nodes=N --ntasks-per-node=T --gpus-per-node=G] $0" \
       "--config=configs/X.py --workdir=DIR [--config.field=value ...]" >&2
  exit 2
fi
# sbatch runs a copy of this script; the repository is where the job was submitted.
cd "${SLURM_SUBMIT_DIR:-.}"

# --kill-on-bad-exit: if one process fails, SLURM ends the others instead of leaving them
# waiting for it.
exec srun --kill-on-bad-exit=1 python -m dqnn.main --config.multi_host=True "$@"
