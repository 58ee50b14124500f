#!/usr/bin/env bash
# Runs one node's part of a multi-node GPU training run; start it on every node.
#
#   MASTER_ADDR=node0 NNODES=4 NODE_RANK=0 launch/multi_node_gpu.sh \
#       --config=configs/imagenet_resnet50_w2a2.py --workdir=/shared/dqnn/r50_w2a2
#   (the same on node1 .. node3 with NODE_RANK=1 .. 3)
#
# torchrun-style environment: MASTER_ADDR (the rank-0 node, reachable from every node),
# MASTER_PORT (default 29500, free on that node), NNODES and NODE_RANK (0 .. NNODES-1). One
# process per node drives all its GPUs (CUDA_VISIBLE_DEVICES chooses them). Run from the
# repository root with its environment active; --workdir must be storage every node shares.
# launch/ssh_nodes.sh starts this on a list of hosts.
set -euo pipefail

: "${MASTER_ADDR:?set MASTER_ADDR to the rank-0 node}"
: "${NNODES:?set NNODES to the number of nodes}"
: "${NODE_RANK:?set NODE_RANK to this node (0 .. NNODES-1)}"
if [[ $# -lt 2 ]]; then
  echo "usage: $0 --config=configs/X.py --workdir=DIR [--config.field=value ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

exec python -m dqnn.main --coordinator_address="${MASTER_ADDR}:${MASTER_PORT:-29500}" \
    --num_processes="${NNODES}" --process_id="${NODE_RANK}" --local_device_ids=all "$@"
