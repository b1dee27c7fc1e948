# The container image of a vitamin-nas Ray cluster: every node of docs/cluster/ray-up-aws.yaml and every pod of
# docs/cluster/kuberay/*.yaml runs it, and so does the search's driver (`ray job submit` runs it on the head), so
# the driver's Ray is the cluster's Ray by construction. Built from the repository's root:
#
#   docker build -t registry.example.com/vitamin-nas:0.1.0 .
#   docker push registry.example.com/vitamin-nas:0.1.0
#
# It installs the project (`pip install .`, with its dependencies and the `dashboard` extra: `ray[default]`, which
# `ray job submit` and KubeRay's RayJob need on the head) and pins Ray to RAY_VERSION, the version the project's
# tests run with; tests/test_cluster_recipes.py checks that the KubeRay manifests' rayVersion says the same.
# torch's Linux wheels carry CUDA; the GPUs and their driver come from the node (NVIDIA's container toolkit).
FROM python:3.11-slim

ARG RAY_VERSION=2.60.0

# rsync and ssh: Ray's cluster launcher syncs files into the container and its autoscaler, on the head, reaches
# the worker nodes over SSH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client rsync \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# The checkout stays in the image: its studies/ and search_spaces/, and docs/cluster/search.sh, which the recipes
# run as /opt/vitamin-nas/docs/cluster/search.sh.
WORKDIR /opt/vitamin-nas
COPY . .
RUN pip install ".[dashboard]" "ray[default,tune]==${RAY_VERSION}" \
    && python -c "import ray, sys; sys.exit(ray.__version__ != '${RAY_VERSION}')" \
    && vitamin-nas --help > /dev/null
