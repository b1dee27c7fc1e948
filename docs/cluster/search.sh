#!/usr/bin/env bash
# The search command every cluster recipe runs: `vitamin-nas search STUDY --out OUT [OPTIONS]`, with --resume
# when OUT already holds a search, so that the same command starts it and continues it (a resubmitted or
# requeued SLURM job, a RayJob retried on a new cluster, a `ray job submit` after `ray job stop`).
#
#   search.sh STUDY OUT [vitamin-nas search options]
#   search.sh quickstart /shared/runs/quickstart --address auto
#
# Used by docs/cluster/slurm/ray-node.sh (`search`), docs/cluster/kuberay/rayjob.yaml (its entrypoint) and the
# `ray job submit` of docs/cluster/ray-up-aws.yaml; in the container image (the repository's Dockerfile) it is
# /opt/vitamin-nas/docs/cluster/search.sh. The search stops cleanly on SIGINT or SIGTERM (exit code 130).
set -euo pipefail

usage="usage: search.sh STUDY OUT [vitamin-nas search options]"
study=${1:?$usage}
out=${2:?$usage}
shift 2
resume=()
[[ ! -e $out/study.db ]] || resume=(--resume)
exec vitamin-nas search "$study" --out "$out" ${resume[@]+"${resume[@]}"} "$@"
