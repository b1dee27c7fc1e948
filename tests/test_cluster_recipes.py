"""The cluster recipes (docs/cluster/, the Dockerfile; docs/cluster.md), checked as far as a machine without a
cluster allows: every manifest parses; the `ray up` YAML passes Ray's cluster-launcher schema and the checks
`ray up` makes; the KubeRay RayCluster and RayJob carry the keys their CRDs require, the shared volume and the
image; every recipe names the same image and the Ray version the project's tests run with; the shell scripts
parse; search.sh adds --resume when the run directory holds a search; the SLURM batch script stops the search
with SIGINT on SLURM's lead signal and requeues the job (with srun, scontrol and the driver stood in for);
`docker build` where a Docker daemon answers. The KubeRay manifests are also validated against the schema of
KubeRay's RayJob CRD (v1.5.1, the oldest release with `authOptions`; tests/data/kuberay-v1.5.1-rayjob.schema.json,
whose "$comment" says where it comes from), with unknown fields refused as `kubectl apply` refuses them."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from packaging.requirements import Requirement

import nas

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "docs" / "cluster"
RAY_UP = CLUSTER / "ray-up-aws.yaml"
KUBERAY = CLUSTER / "kuberay"
IMAGE_ROOT = "/opt/vitamin-nas"  # where the Dockerfile puts the checkout
SHARED = "/shared"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def dockerfile_ray_version() -> str:
    found = re.search(r"^ARG RAY_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert found, "the Dockerfile pins Ray with ARG RAY_VERSION=..."
    return found.group(1)


def pod_templates(cluster_spec: dict) -> list[dict]:
    """The head's and every worker group's pod template of a RayClusterSpec."""
    return [cluster_spec["headGroupSpec"]["template"]] + [g["template"] for g in cluster_spec["workerGroupSpecs"]]


def test_every_manifest_parses():
    manifests = sorted(CLUSTER.rglob("*.yaml"))
    assert {p.relative_to(CLUSTER).as_posix() for p in manifests} == {
        "ray-up-aws.yaml", "kuberay/shared-volume.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"}
    for path in manifests:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(documents) == 1 and isinstance(documents[0], dict), path


def test_the_ray_up_yaml_passes_the_cluster_launchers_schema_and_checks():
    """Ray's own schema (ray/autoscaler/ray-schema.json), then what `ray up` does with the file: its provider's
    defaults filled in and validated again."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(RAY_UP)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers", "docker",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    validate_config(prepare_config(config))


def test_the_ray_up_yaml_runs_the_project_image_on_a_shared_filesystem_and_submits_the_driver_as_a_job():
    config = load(RAY_UP)
    docker = config["docker"]
    assert docker["image"] == load(KUBERAY / "raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["image"]
    assert f"--volume {SHARED}:{SHARED}" in docker["run_options"]
    assert f"--workdir {SHARED}" in docker["run_options"]
    assert "--env RAY_AUTH_MODE=token" in docker["run_options"]
    assert any("mount -t nfs4" in c and f" {SHARED}" in c for c in config["initialization_commands"])
    assert config["setup_commands"] == [] and config["worker_setup_commands"] == []  # the image is the environment
    assert "~/.ray/auth_token" in config["file_mounts"]
    text = RAY_UP.read_text()
    assert "ray job submit" in text and "ray attach" not in text
    assert f"{IMAGE_ROOT}/docs/cluster/search.sh" in text


def test_the_kuberay_raycluster_has_what_its_crd_requires_and_mounts_the_shared_volume():
    cluster = load(KUBERAY / "raycluster.yaml")
    claim = load(KUBERAY / "shared-volume.yaml")
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert "rayStartParams" in spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    image = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    for template in pod_templates(spec):
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = pod["containers"][0]  # KubeRay's Ray container is the first
        assert container["name"] and container["image"] == image
        assert container["workingDir"] == SHARED
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert any("nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
               for g in spec["workerGroupSpecs"])


def test_the_kuberay_rayjob_runs_a_search_on_the_raycluster_spec():
    job = load(KUBERAY / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"] == load(KUBERAY / "raycluster.yaml")["spec"]  # one cluster definition
    for template in pod_templates(spec["rayClusterSpec"]):
        assert template["spec"]["containers"]
    entrypoint = spec["entrypoint"].split()
    # KubeRay pastes the entrypoint into the submitter's shell line: no shell syntax of its own
    assert not re.search(r"[;&|$`<>()]", spec["entrypoint"])
    script, _study, out, *options = entrypoint
    assert script == f"{IMAGE_ROOT}/docs/cluster/search.sh" and (ROOT / script[len(IMAGE_ROOT) + 1:]).is_file()
    assert out.startswith(f"{SHARED}/") and options[-2:] == ["--address", "auto"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1


def strict(schema: object) -> object:
    """An OpenAPI schema of a CRD, with unknown fields refused where it declares its fields (kubectl's default
    server-side field validation, `--validate=strict`)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict_schema = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict_schema["additionalProperties"] = False
    return strict_schema


def test_the_kuberay_manifests_pass_the_schema_of_kuberays_crd():
    schema = strict(json.loads((ROOT / "tests" / "data" / "kuberay-v1.5.1-rayjob.schema.json").read_text()))
    jsonschema.Draft7Validator(schema).validate(load(KUBERAY / "rayjob.yaml"))
    cluster_spec = schema["properties"]["spec"]["properties"]["rayClusterSpec"]  # a RayCluster's spec is the same type
    jsonschema.Draft7Validator(cluster_spec).validate(load(KUBERAY / "raycluster.yaml")["spec"])
    with pytest.raises(jsonschema.ValidationError, match="'workDir' was unexpected"):
        misspelt = load(KUBERAY / "raycluster.yaml")["spec"]
        misspelt["headGroupSpec"]["template"]["spec"]["containers"][0]["workDir"] = SHARED
        jsonschema.Draft7Validator(cluster_spec).validate(misspelt)


def test_every_recipe_names_one_image_and_the_ray_the_project_runs_with():
    """The driver's Ray is the cluster's: both run the image, whose Ray the Dockerfile pins within the project's
    requirement, and KubeRay's rayVersion says the same. (Not tied to the Ray this environment resolved: a new
    Ray release on PyPI must not fail a fresh clone's tests.)"""
    version = dockerfile_ray_version()
    requirement = next(r for r in map(Requirement, importlib.metadata.requires("vitamin-nas")) if r.name == "ray")
    assert requirement.specifier.contains(version)
    cluster, job = load(KUBERAY / "raycluster.yaml"), load(KUBERAY / "rayjob.yaml")
    assert cluster["spec"]["rayVersion"] == job["spec"]["rayClusterSpec"]["rayVersion"] == version
    images = {c["image"] for t in pod_templates(cluster["spec"]) for c in t["spec"]["containers"]}
    images.add(load(RAY_UP)["docker"]["image"])
    assert len(images) == 1 and images.pop().endswith(f"/vitamin-nas:{nas.__version__}")


def test_the_dockerfile_installs_the_project_with_the_job_server():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[dashboard\]" "ray\[default,tune\]==\$\{RAY_VERSION\}"', text)
    assert f"WORKDIR {IMAGE_ROOT}" in text and "COPY . ." in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "data"} <= set(ignored)


SCRIPTS = sorted([*CLUSTER.rglob("*.sh"), *CLUSTER.rglob("*.sbatch")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_shell_scripts_parse(script):
    """`bash -n`; the .sh scripts are run by their path (srun, a RayJob's entrypoint), so they are executable."""
    assert script.suffix != ".sh" or os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_search_sh_resumes_the_search_its_run_directory_holds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "vitamin-nas", 'echo "$@"\n')
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = tmp_path / "run"

    def run() -> str:
        result = subprocess.run([str(CLUSTER / "search.sh"), "quickstart", str(out), "--address", "auto"],
                                capture_output=True, text=True, env=environment, check=True)
        return result.stdout.strip()

    assert run() == f"search quickstart --out {out} --address auto"
    out.mkdir()
    (out / "study.db").touch()
    assert run() == f"search quickstart --out {out} --resume --address auto"


def slurm_job(tmp_path: Path, driver: str) -> tuple[dict[str, str], Path]:
    """vitamin-nas.sbatch's surroundings on one node: srun runs its command, scontrol names the node and records a
    requeue, `ray` gives a token, and the node script's `search` is `driver` (a Python program); head and worker
    return at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "srun", 'while [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done\nexec "$@"\n')
    stand_in(bin_dir, "scontrol", f'if [[ $1 == show ]]; then echo node1; else echo "$@" >> {tmp_path}/scontrol; fi\n')
    stand_in(bin_dir, "ray", "echo token\n")
    stand_in(tmp_path, "node.sh", f'[[ $1 == search ]] || exit 0\nexec {sys.executable} {tmp_path}/driver.py "$@"\n')
    (tmp_path / "driver.py").write_text(driver)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("")
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(tmp_path),
                   "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_ID": "4242",
                   "RAY_NODE_SCRIPT": str(tmp_path / "node.sh"), "VENV": str(tmp_path / "venv")}
    return environment, tmp_path / "scontrol"


# The driver as the search's own handler makes it: SIGINT stops it cleanly with exit code 130. It starts in the
# background of a non-interactive shell, where SIGINT is ignored until a handler goes in, as `vitamin-nas` does.
STOPPABLE_DRIVER = """\
import signal, sys, time
from pathlib import Path
here = Path(__file__).parent
def stop(signum, frame):
    (here / "stopped-by").write_text(signal.Signals(signum).name)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
(here / "arguments").write_text(" ".join(sys.argv[1:]))
time.sleep(60)
sys.exit(0)
"""


def test_the_sbatch_script_stops_the_search_with_sigint_before_the_time_limit_and_requeues(tmp_path):
    sbatch = CLUSTER / "slurm" / "vitamin-nas.sbatch"
    assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", sbatch.read_text(), re.MULTILINE)
    environment, requeued = slurm_job(tmp_path, STOPPABLE_DRIVER)
    job = subprocess.Popen(["bash", str(sbatch), "study.yaml", "/shared/runs/x", "--storage", "/shared/ray"],
                           env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "arguments").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "arguments").read_text() == "search study.yaml /shared/runs/x --storage /shared/ray"
    job.send_signal(signal.SIGUSR1)  # what SLURM's --signal=B:USR1@600 sends the batch shell
    _, stderr = job.communicate(timeout=30)
    assert (tmp_path / "stopped-by").read_text() == "SIGINT"
    assert job.returncode == 130 and "stopping the search (SIGINT), then requeueing" in stderr
    assert requeued.read_text().split() == ["requeue", "4242"]


def test_the_sbatch_script_ends_with_the_search_and_requeues_nothing(tmp_path):
    environment, requeued = slurm_job(tmp_path, "import sys\nsys.exit(0)\n")
    job = subprocess.run(["bash", str(CLUSTER / "slurm" / "vitamin-nas.sbatch"), "study.yaml", "/shared/runs/x"],
                         env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert job.returncode == 0, job.stderr
    assert not requeued.exists()


def docker_daemon() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_daemon(), reason="no Docker daemon answers here (`docker info` fails)")
def test_the_image_builds_with_the_pinned_ray():
    tag = f"vitamin-nas-test:{nas.__version__}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=3600)
    result = subprocess.run(["docker", "run", "--rm", tag, "ray", "--version"], capture_output=True, text=True,
                            check=True)
    assert dockerfile_ray_version() in result.stdout
