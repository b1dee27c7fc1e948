"""Export a trained candidate as an open_clip model, so that a winner can be used outside the toolkit.

An export directory is what open_clip's `local-dir:` schema reads, plus the arch:

    open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...}, open_clip's hub layout
    open_clip_model.safetensors  the CLIP state dict (open_clip's key names)
    arch.json                    the `Arch` (nas.arch) and text tower it was built from
    measured.json                from a search (`export_trained`): the study, trial, rung, what it measured
                                 and on which eval sets with which zero-shot prompts (`evaluated_on`)

The image tower is described to open_clip as a timm model (`vision_cfg.timm_model_name`), which open_clip
wraps exactly as `nas.models` does (trunk, then dropout and a bias-free projection), so the state dict
loads strictly. For a ViTamin, ConvNeXt or CoAtNet preset the timm model is timm's own (`vitamin_small_224`,
`convnext_tiny`, `coatnet_0_224`, ...) and open_clip loads the export with nothing else imported:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:runs/a1b2/open_clip")

Any other arch cannot be described by an open_clip JSON config (pitfalls: open_clip forwards only
drop-path settings to timm), so its trunk is registered with timm first, under `nas_<arch_id>`:

    nas.export.register("runs/a1b2/open_clip")          # then the same create_model_and_transforms call
    model, preprocess_train, preprocess_val = nas.export.load_open_clip("runs/a1b2/open_clip")  # both steps

A search's trained candidates come out of its results database: `trained(store, trial=N | arch_id=ID |
best=True, budget=B)` finds a trial's rung and the checkpoint the search kept of it, `export_trained` writes it
(`vitamin-nas export RUN --best --out DIR`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nas.arch import Arch
from nas.errors import ConfigError
from nas.presets import PRESETS, TIMM_NAMES, TextTower

if TYPE_CHECKING:
    from nas.results import ResultStore

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
ARCH_FILE = "arch.json"
LOCAL_DIR = "local-dir:"


def timm_name(arch: Arch) -> str:
    """timm's model name for the trunk: timm's own for a ViTamin, ConvNeXt or CoAtNet preset (any embed_dim), else
    `nas_<arch_id>`. A ConvNeXt trunk has nothing that depends on the image size, so any size matches."""
    size_free = arch.transformer is None and arch.stem == "patch"
    for name, timm_model in TIMM_NAMES.items():
        reference = PRESETS[name][0]
        if size_free and reference.family == arch.family:
            reference = reference.replace(image_size=arch.image_size)
        if reference.replace(embed_dim=arch.embed_dim) == arch:
            return timm_model
    return f"nas_{arch.arch_id}"


def model_config(arch: Arch, text: TextTower, drop_path: float = 0.0, logit_bias: bool = False) -> dict[str, Any]:
    """open_clip's model config (as its `model_configs/ViTamin-*.json`) for `build_clip(arch, text)`."""
    config: dict[str, Any] = {
        "embed_dim": arch.embed_dim,
        "vision_cfg": {"timm_model_name": timm_name(arch), "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": drop_path,
                       "image_size": arch.image_size},
        "text_cfg": {"context_length": text.context_length, "vocab_size": text.vocab_size, "width": text.width,
                     "heads": text.heads, "layers": text.layers, "mlp_ratio": text.mlp_ratio},
        "custom_text": True,
    }
    if logit_bias:
        config["init_logit_bias"] = -10.0
    return config


def preprocess_config(arch: Arch) -> dict[str, Any]:
    """open_clip's preprocessing for the tower (CLIP mean/std, bicubic, shortest-side resize, as trained)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return {"size": arch.image_size, "mode": "RGB", "mean": list(OPENAI_DATASET_MEAN),
            "std": list(OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest"}


def export(state_dict: dict[str, torch.Tensor], arch: Arch, text: TextTower, out: str | os.PathLike,
           drop_path: float = 0.0) -> Path:
    """Write an export directory from a CLIP state dict (`model.state_dict()` of `build_clip`)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_config(arch, text, drop_path, logit_bias="logit_bias" in state_dict),
              "preprocess_cfg": preprocess_config(arch)}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (out / ARCH_FILE).write_text(json.dumps({"arch": arch.to_dict(), "text": asdict(text)}, indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(out / WEIGHTS_FILE))
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export the model of a `nas.train` checkpoint (which records its arch, text tower and config)."""
    from nas.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    arch = Arch.from_json(state["arch"], source=str(checkpoint))
    return export(state["model"], arch, TextTower(**state["text"]), out, drop_path=state["config"]["drop_path"])


def read_arch(directory: str | os.PathLike) -> tuple[Arch, TextTower]:
    path = Path(directory) / ARCH_FILE
    if not path.exists():
        raise ConfigError("not an export directory (no arch.json)", source=str(directory))
    data = json.loads(path.read_text())
    return Arch.from_dict(data["arch"], source=str(path)), TextTower(**data["text"])


def register(directory: str | os.PathLike) -> str:
    """Make the export's image trunk known to timm (a no-op for timm's own ViTamins); returns its timm name."""
    arch, _ = read_arch(directory)
    name = timm_name(arch)
    import timm
    from timm.models import register_model

    if not timm.is_model(name):
        register_model(_entrypoint(arch, name))
    return name


def _entrypoint(arch: Arch, name: str):
    """A timm entrypoint that builds the arch's trunk; timm registers it under the function's name."""

    def create(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        from nas.models.tower import build_trunk

        if pretrained:
            raise ValueError(f"{name} has no pretrained weights in timm; load the export's weights")
        trunk = build_trunk(arch, kwargs.get("drop_path_rate") or 0.0)
        cfg = {"input_size": (3, arch.image_size, arch.image_size), "pool_size": None, "num_classes": 0}
        trunk.pretrained_cfg = trunk.default_cfg = cfg
        return trunk

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    return create


def load_open_clip(directory: str | os.PathLike, device: str | torch.device = "cpu",
                   untrained: bool = False) -> tuple[Any, Any, Any]:
    """`(model, preprocess_train, preprocess_val)` from an export, through open_clip's own loader.

    A directory without weights (a selection of an arch no search kept a checkpoint of) is refused: open_clip
    would build a randomly initialised model and only log a warning. `untrained=True` builds that model."""
    import open_clip

    if not (Path(directory) / WEIGHTS_FILE).is_file() and not untrained:
        raise ConfigError(f"holds no trained weights ({WEIGHTS_FILE}), only the model's config: open_clip would "
                          "build it randomly initialised. Export trained weights with `vitamin-nas export`, or "
                          "pass untrained=True", source=str(directory))
    register(directory)
    return open_clip.create_model_and_transforms(f"{LOCAL_DIR}{Path(directory)}", device=device)


# ---- the trained candidates of a search ------------------------------------------------------------------------

MEASURED_FILE = "measured.json"


@dataclass(frozen=True)
class Trained:
    """A candidate as a search trained it: one trial at one rung, what it measured there, and the directory of
    that rung's checkpoint (None when it was not kept)."""

    trial_id: str
    number: int
    arch: Arch
    rung: int
    budget: int
    samples_seen: int
    metrics: dict[str, Any]
    checkpoint: str | None


def _trained(store: ResultStore, trial: dict[str, Any], row: dict[str, Any]) -> Trained:
    from nas.results import rung_checkpoint

    return Trained(trial["trial_id"], trial["number"], Arch.from_json(trial["arch"], source=str(store.path)),
                   row["rung"], row["budget"], row["samples_seen"], row["metrics"],
                   rung_checkpoint(store, trial["trial_id"], row["rung"]))


def measured_rungs(store: ResultStore, arch_id: str) -> list[Trained]:
    """Every rung measured of an arch, by every trial that measured it (a proposal measured before reports the
    first trial's results again, without a checkpoint of its own)."""
    from nas.status import MEASURED

    trials = [t for t in store.trials(status=MEASURED) if t["arch_id"] == arch_id]
    return [_trained(store, t, row) for t in trials for row in store.rungs(t["trial_id"])]


def trained(store: ResultStore, *, trial: int | None = None, arch_id: str | None = None, best: bool = False,
            budget: int | None = None, metric: str | None = None) -> Trained:
    """One trained candidate of a search, with its checkpoint: trial number `trial`, the arch `arch_id` (or a
    unique prefix of it), or the `best` arch on `metric` (default: the study's first measured objective), at
    `budget` samples seen (default: its furthest rung, or for `best` the largest budget measured).

    When the trial asked for has no checkpoint of that rung but another trial of the same arch and schedule
    does (the trial that measured it first), that one is used. Raises `ConfigError` saying what exists."""
    if sum((trial is not None, arch_id is not None, best)) != 1:
        raise ConfigError("give exactly one of a trial number, an arch_id or best", field="--trial")
    if best:
        arch_id, budget = _best(store, budget, metric)
    elif trial is not None:
        row = next((t for t in store.trials() if t["number"] == trial), None)
        if row is None:
            numbers = sorted(t["number"] for t in store.trials() if t["number"] is not None)
            raise ConfigError(f"no trial {trial}; trials: {', '.join(map(str, numbers))}", source=str(store.path),
                              field="--trial")
        arch_id = row["arch_id"]
    else:
        arch_id = _arch_id(store, arch_id)
    rungs = measured_rungs(store, arch_id)
    if trial is not None:
        own = [r for r in rungs if r.number == trial]
        if not own:
            raise ConfigError(f"trial {trial} measured no rung", source=str(store.path), field="--trial")
        rungs = [r for r in rungs if r.number == trial or _schedule(store, r) == _schedule(store, own[0])]
        budget = budget if budget is not None else max(r.budget for r in own)
    if not rungs:
        raise ConfigError(f"arch {arch_id} has no measured rung", source=str(store.path), field="--arch")
    budget = budget if budget is not None else max(r.budget for r in rungs)
    at = [r for r in rungs if r.budget == budget]
    if not at:
        reached = sorted({r.budget for r in rungs})
        raise ConfigError(f"{_what(trial, arch_id)} was not measured at {budget:,} samples seen; measured at: "
                          f"{', '.join(f'{b:,}' for b in reached)}", source=str(store.path), field="--budget")
    kept = sorted((r for r in at if r.checkpoint), key=lambda r: (r.number != trial, r.number))
    if not kept:
        with_checkpoint = sorted({r.budget for r in rungs if r.checkpoint})
        where = f"; checkpoints kept at: {', '.join(f'{b:,}' for b in with_checkpoint)} samples seen (--budget)" \
            if with_checkpoint else "; none of its rungs has one"
        raise ConfigError(f"no checkpoint was kept of {_what(trial, arch_id)} at {budget:,} samples seen (a search "
                          f"keeps each trial's rungs, or with storage.keep the best trials' at each rung){where}",
                          source=str(store.path), field="--budget")
    return kept[0]


def _what(trial: int | None, arch_id: str) -> str:
    return f"trial {trial}" if trial is not None else f"arch {arch_id}"


def _schedule(store: ResultStore, rung: Trained) -> int | None:
    return store.trial(rung.trial_id)["schedule"]


def _arch_id(store: ResultStore, prefix: str) -> str:
    ids = sorted({t["arch_id"] for t in store.trials()})
    matches = [a for a in ids if a.startswith(prefix)]
    if len(matches) != 1:
        problem = "matches several archs" if matches else "is not an arch of this search"
        raise ConfigError(f"{prefix!r} {problem}; arch_ids: {', '.join(matches or ids)}", source=str(store.path),
                          field="--arch")
    return matches[0]


def _best(store: ResultStore, budget: int | None, metric: str | None) -> tuple[str, int]:
    """The arch that measured best on `metric` at `budget` (default: the largest budget measured): by its mean over
    seeds where it ran with several (a confirmed finalist, `nas.seeds.ranked`)."""
    from nas.metrics import TRAINED
    from nas.seeds import ranked
    from nas.status import MEASURED

    metric = metric or next(m for m in store.objectives if m in TRAINED)
    budgets = store.budgets()
    if not budgets:
        raise ConfigError("no rung measured yet", source=str(store.path))
    budget = budget if budget is not None else budgets[-1]
    frame = store.frame(budget=budget, status=MEASURED)
    if metric not in frame or frame[metric].isna().all():
        raise ConfigError(f"nothing measured {metric} at {budget:,} samples seen; budgets measured: "
                          f"{', '.join(f'{b:,}' for b in budgets)}", source=str(store.path), field="--budget")
    return ranked(frame.dropna(subset=[metric]), metric, store.study().train.seed).arch_id.iloc[0], budget


def export_trained(store: ResultStore, candidate: Trained, out: str | os.PathLike) -> Path:
    """Export a search's trained candidate (`trained`) for open_clip, with `measured.json`: the study, trial,
    rung and what it measured there (its zero-shot accuracy is what the exported model scores on the study's
    eval set)."""
    from nas.train.checkpoint import CHECKPOINT, load_checkpoint

    if candidate.checkpoint is None:
        raise ConfigError(f"trial {candidate.number} kept no checkpoint at {candidate.budget:,} samples seen",
                          source=str(store.path))
    path = Path(candidate.checkpoint) / CHECKPOINT
    if not path.is_file():
        raise ConfigError("the recorded checkpoint is missing (deleted?)", source=str(path))
    state = load_checkpoint(path)
    if state["samples_seen"] != candidate.samples_seen or Arch.from_json(state["arch"]) != candidate.arch:
        raise ConfigError(f"holds {state['samples_seen']:,} samples seen of another run than trial "
                          f"{candidate.number}'s rung at {candidate.samples_seen:,}", source=str(path))
    out = export(state["model"], candidate.arch, TextTower(**state["text"]), out,
                 drop_path=state["config"]["drop_path"])
    study = store.study()
    data = study.data
    templates = None if data.zeroshot_templates is None else list(data.zeroshot_templates)
    measured = {"study": study.name, "database": str(store.path), "trial_id": candidate.trial_id,
                "number": candidate.number, "arch_id": candidate.arch.arch_id, "arch_name": candidate.arch.name(),
                "rung": f"{candidate.rung + 1}/{len(study.budget.rungs)}",  # as the CLI and `status` number it
                "budget": candidate.budget, "samples_seen": candidate.samples_seen,
                "checkpoint": candidate.checkpoint, "metrics": candidate.metrics,
                # what the metrics were measured on: the same sets and prompts (None: the set's templates.txt)
                # give the same numbers (nas.data.zeroshot_set(zeroshot, transform=preprocess, templates=...))
                "evaluated_on": {"zeroshot": data.zeroshot, "zeroshot_templates": templates,
                                 "retrieval": data.retrieval}}
    (out / MEASURED_FILE).write_text(json.dumps(measured, indent=2) + "\n")
    return out


def furthest_trained(store: ResultStore, arch_id: str) -> Trained | None:
    """The arch's furthest rung whose checkpoint a search kept (None when it kept none)."""
    kept = [r for r in measured_rungs(store, arch_id) if r.checkpoint]
    return max(kept, key=lambda r: (r.budget, -r.number)) if kept else None
