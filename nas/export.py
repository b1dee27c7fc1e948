"""Export a trained candidate as an open_clip model, so that a winner can be used outside the toolkit.

An export directory is what open_clip's `local-dir:` schema reads, plus the arch:

    open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...}, open_clip's hub layout
    open_clip_model.safetensors  the CLIP state dict (open_clip's key names)
    arch.json                    the `Arch` (nas.arch) and text tower it was built from

The image tower is described to open_clip as a timm model (`vision_cfg.timm_model_name`), which open_clip
wraps exactly as `nas.models` does (trunk, then dropout and a bias-free projection), so the state dict
loads strictly. For a ViTamin, ConvNeXt or CoAtNet preset the timm model is timm's own (`vitamin_small_224`,
`convnext_tiny`, `coatnet_0_224`, ...) and open_clip loads the export with nothing else imported:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:runs/a1b2/open_clip")

Any other arch cannot be described by an open_clip JSON config (pitfalls: open_clip forwards only
drop-path settings to timm), so its trunk is registered with timm first, under `nas_<arch_id>`:

    nas.export.register("runs/a1b2/open_clip")          # then the same create_model_and_transforms call
    model, preprocess_train, preprocess_val = nas.export.load_open_clip("runs/a1b2/open_clip")  # both steps
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from nas.arch import Arch
from nas.errors import ConfigError
from nas.presets import PRESETS, TIMM_NAMES, TextTower

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
    from nas.train import load_checkpoint

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


def load_open_clip(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, Any, Any]:
    """`(model, preprocess_train, preprocess_val)` from an export, through open_clip's own loader."""
    import open_clip

    register(directory)
    return open_clip.create_model_and_transforms(f"{LOCAL_DIR}{Path(directory)}", device=device)
