# The GPU check: one table of the trainer's throughput and MFU (ViTamin-S/B, batch 256, bf16, eager and compiled)
# beside open_clip_train on the same shards and the H100 anchors, the gain of packing four tiny runs onto one GPU,
# and torchrun on two GPUs when there are two (benchmarks/gpu_check.py says what each part measures). Made for a
# lent GPU machine's 10-minute call, without network (README.md, "The GPU check", gives the call):
#
#   make gpu-wheels                                # once, where there is network: fills benchmarks/gpu-wheels/
#   benchmarks/gpu_check.sh --limit-s 600 --budget-s 560 --report $OUT [--parts PATTERNS] [--workers N]
#   benchmarks/gpu_check.sh --gpus 1 --dry-run     # the facts, the plan and its commands
#   benchmarks/gpu_check.sh --cpu --no-install     # the tiny CPU version, in an environment that has everything
#
# It first checks the arguments (gpu_check.py --dry-run: a refusal costs no install), then installs, with pip
# --target into $GPU_CHECK_SITE (default /tmp/vitamin-nas-site) and without network, what the GPU machines lack
# (../.library/device/KINDS.md): the project's dependencies from benchmarks/gpu-wheels/deps, less Ray (no wheel of
# it fits the 64 MiB such a machine takes, and `vitamin-nas train` never imports it) and less torch and torchvision
# (the machine has them), then the project itself, built from this checkout with the folder's setuptools. timm is
# among those wheels, at the version the tests use: nas/models/tower.py imports timm's internals, and the folder
# comes first on the path. open_clip_train gets webdataset 0.2.86 (its `training` extra pins <=0.2.86) from
# benchmarks/gpu-wheels/open_clip_train, in a folder of its own put first on its path. PYTHON (default python3) is
# the interpreter that has torch; GPU_CHECK_WHEELS moves the wheel folder.
set -euo pipefail

export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}  # --budget-s counts from here, the install included
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-python3}
wheels=${GPU_CHECK_WHEELS:-$here/gpu-wheels}
site=${GPU_CHECK_SITE:-/tmp/vitamin-nas-site}
install=1
args=()
for arg in "$@"; do
  case $arg in
    --no-install) install=0 ;;
    --dry-run | -h | --help) install=0; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done

export PYTHONUNBUFFERED=1  # progress lines reach the call's output even when the command is killed

if ((install)); then
  "$python" "$here/gpu_check.py" --gpus 1 --dry-run ${args[@]+"${args[@]}"} >/dev/null
  shopt -s nullglob
  deps=("$wheels"/deps/*.whl)
  webdataset=("$wheels"/open_clip_train/*.whl)
  if ((${#deps[@]} == 0 || ${#webdataset[@]} == 0)); then
    echo "gpu_check.sh: no wheels in $wheels/deps or $wheels/open_clip_train: run 'make gpu-wheels' first" \
      "(or --no-install in an environment that has every dependency)" >&2
    exit 2
  fi
  pip=("$python" -m pip install --quiet --no-index --no-deps --no-cache-dir --disable-pip-version-check --upgrade)
  echo "gpu_check.sh: installing ${#deps[@]} wheels and the project into $site" >&2
  "${pip[@]}" --target "$site" $(printf '%s\n' "${deps[@]}" | grep -v '/setuptools-')
  # Built offline from this checkout: pip's isolated build takes setuptools from the folder.
  "${pip[@]}" --find-links "$wheels/deps" --target "$site" "$repo"
  "${pip[@]}" --target "$site-open_clip_train" "${webdataset[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$site/bin:$PATH"
  args+=(--open-clip-path "$site-open_clip_train")
fi

exec "$python" "$here/gpu_check.py" ${args[@]+"${args[@]}"}
