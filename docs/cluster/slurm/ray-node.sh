#!/usr/bin/env bash
# One piece of a Ray cluster inside a SLURM job; docs/cluster/slurm/vitamin-nas.sbatch runs it on each node with srun:
#
#   ray-node.sh head                       # the Ray head, on the job's first node (runs until the job ends)
#   ray-node.sh worker                     # a Ray worker: waits for the head, joins it (runs until the job ends)
#   ray-node.sh search STUDY OUT [OPTIONS] # waits until every node joined, then `vitamin-nas search --address`
#                                          # through ../search.sh (--resume when OUT holds a search: a requeued
#                                          # job continues it)
#
# From SLURM: SLURM_CPUS_PER_TASK (else SLURM_CPUS_ON_NODE) CPUs and SLURM_GPUS_ON_NODE GPUs for Ray on each node,
# SLURM_JOB_NUM_NODES nodes to wait for. Its own: RAY_HEAD_IP (the head's address, required), RAY_PORT (6379),
# RAY_NODE_IP (this node's address; default: the first of `hostname --ip-address`), RAY_TEMP_DIR (Ray's
# default), RAY_WAIT_S (how long to wait for the head and the nodes, 600), PYTHON (python3: the interpreter of
# the environment with `ray` and `vitamin-nas` on PATH).
#
# Ray 2.5x authenticates `ray start` clusters with a token: RAY_AUTH_MODE=token is set here for every piece, and
# the token is RAY_AUTH_TOKEN when set (vitamin-nas.sbatch sets it for the whole job), else ~/.ray/auth_token.
# The dashboard is not started; the nodes listen on RAY_NODE_IP only.
set -euo pipefail

: "${RAY_HEAD_IP:?ray-node.sh: set RAY_HEAD_IP to the address of the head node}"
port=${RAY_PORT:-6379}
wait_s=${RAY_WAIT_S:-600}
python=${PYTHON:-python3}
export RAY_AUTH_MODE=token

node_ip() {
  if [[ -n ${RAY_NODE_IP:-} ]]; then echo "$RAY_NODE_IP"; else hostname --ip-address | awk '{print $1}'; fi
}

# Ray's resources on this node: what SLURM gave the job step, not everything the machine has.
resources() {
  local cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}
  [[ -z $cpus ]] || printf -- '--num-cpus\n%s\n' "$cpus"
  [[ -z ${SLURM_GPUS_ON_NODE:-} ]] || printf -- '--num-gpus\n%s\n' "$SLURM_GPUS_ON_NODE"
  [[ -z ${RAY_TEMP_DIR:-} ]] || printf -- '--temp-dir\n%s\n' "$RAY_TEMP_DIR"
}

wait_for_head() {
  local deadline=$((SECONDS + wait_s))
  until (exec 3<>"/dev/tcp/$RAY_HEAD_IP/$port") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "ray-node.sh: no Ray head listens on $RAY_HEAD_IP:$port after $wait_s s" >&2
      return 1
    fi
    sleep 1
  done
}

case ${1:-} in
  head)
    mapfile -t options < <(resources)
    exec ray start --head --node-ip-address "$(node_ip)" --port "$port" --include-dashboard false \
      --disable-usage-stats ${options[@]+"${options[@]}"} --block
    ;;
  worker)
    wait_for_head
    mapfile -t options < <(resources)
    exec ray start --address "$RAY_HEAD_IP:$port" --node-ip-address "$(node_ip)" --disable-usage-stats \
      ${options[@]+"${options[@]}"} --block
    ;;
  search)
    study=${2:?usage: ray-node.sh search STUDY OUT [vitamin-nas search options]}
    out=${3:?usage: ray-node.sh search STUDY OUT [vitamin-nas search options]}
    shift 3
    wait_for_head
    "$python" - "$RAY_HEAD_IP:$port" "${SLURM_JOB_NUM_NODES:-1}" "$wait_s" <<'PY'
import sys
import time

import ray

address, nodes, wait_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.time() + wait_s
while (alive := sum(node["Alive"] for node in ray.nodes())) < nodes:
    if time.time() > deadline:
        sys.exit(f"ray-node.sh: {alive} of {nodes} nodes joined the Ray cluster in {wait_s:g} s")
    time.sleep(2)
print(f"ray-node.sh: {alive} of {nodes} nodes in the Ray cluster at {address}", file=sys.stderr)
PY
    exec "$(dirname "${BASH_SOURCE[0]}")/../search.sh" "$study" "$out" --address "$RAY_HEAD_IP:$port" "$@"
    ;;
  *)
    echo "usage: ray-node.sh head | worker | search STUDY OUT [vitamin-nas search options]" >&2
    exit 2
    ;;
esac
