#!/usr/bin/env bash
# Starts a multi-node GPU training run over ssh: launch/multi_node_gpu.sh on every host.
#
#   launch/ssh_nodes.sh node0,node1,node2,node3 \
#       --config=configs/imagenet_resnet50_w2a2.py --workdir=/shared/dqnn/r50_w2a2
#
# The first host is rank 0 and serves the coordinator on $MASTER_PORT (default 29500). Each
# host needs passwordless ssh, this repository at $REPO_DIR (default: this checkout's path)
# and its environment at $REPO_DIR/.venv ($VENV); --workdir must be storage all hosts share.
# Output is prefixed by host; Ctrl-C stops every host (ssh -tt ends the remote process). Exits
# non-zero if any host fails.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 HOST0,HOST1,... --config=configs/X.py --workdir=DIR [--config.field=value ...]" >&2
  exit 2
fi
IFS=',' read -r -a HOSTS <<< "$1"
shift
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
VENV=${VENV:-${REPO_DIR}/.venv}
# printf %q keeps every argument one word through the remote shell.
ARGS=$(printf ' %q' "$@")

pids=()
for rank in "${!HOSTS[@]}"; do
  host=${HOSTS[rank]}
  ssh -tt "${host}" "cd $(printf %q "${REPO_DIR}") && source $(printf %q "${VENV}")/bin/activate &&
      MASTER_ADDR=${HOSTS[0]} MASTER_PORT=${MASTER_PORT:-29500} NNODES=${#HOSTS[@]} \
      NODE_RANK=${rank} launch/multi_node_gpu.sh${ARGS}" 2>&1 | sed -u "s/^/[${host}] /" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "${pid}" || status=$?
done
exit "${status}"
