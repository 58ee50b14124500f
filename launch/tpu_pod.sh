#!/usr/bin/env bash
# Runs one dqnn training command on every host of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/imagenet_resnet18_w2a2.py \
#       --workdir=gs://BUCKET/dqnn/imagenet_resnet18_w2a2
#
# Assumes (see launch/README.md): the repository is checked out at the same path ($REPO_DIR,
# default ~/dqnn) on every host with its virtual environment at $REPO_DIR/.venv and
# `pip install -e .` done; the dataset is prepared where --config.data_dir (or $TFDS_DATA_DIR)
# points on every host; --workdir is storage that every host can reach (a GCS bucket).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE --config=configs/X.py --workdir=DIR [--config.field=value ...]" >&2
  exit 2
fi
TPU_NAME=$1
ZONE=$2
shift 2
REPO_DIR=${REPO_DIR:-'~/dqnn'}

# printf %q keeps every argument one word through the remote shell.
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --worker=all --command="
  cd ${REPO_DIR} && source .venv/bin/activate &&
  python -m dqnn.main --config.multi_host=True${ARGS}"
