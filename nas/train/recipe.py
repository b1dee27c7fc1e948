"""The recipe: the model a run trains, its parameter groups, its learning-rate schedule and its loss.

The recipe is the OpenCLIP one the ViTamin paper trains with (its section 4): AdamW with betas (0.9, 0.98),
eps 1e-6 and weight decay 0.2 except on norms, biases, gains and the logit scale (open_clip_train's
`exclude` rule), a cosine schedule after a linear warmup (open_clip_train's `cosine_lr`, step for step),
open_clip's `ClipLoss` gathered across ranks with `local_loss` and `gather_with_grad` (or `SigLipLoss`),
the logit scale clamped to ln(100) after every step, and drop-path 0.1 in the Transformer stage only.
`mask_ratio` drops that fraction of the Transformer stage's tokens at random in every training forward pass
(FLIP, Li et al. 2023: CLIP trained on half its patches, at about half the cost per image), never in evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from nas.arch import Arch
from nas.errors import ConfigError
from nas.export import WEIGHTS_FILE
from nas.models import build_clip
from nas.presets import TextTower
from nas.train.checkpoint import CHECKPOINT, load_checkpoint
from nas.train.runtime import Runtime
from nas.train_config import TrainConfig

LOGIT_SCALE_MAX = math.log(100)


def build_model(arch: Arch, text: TextTower, config: TrainConfig) -> open_clip.CustomTextCLIP:
    """`build_clip` for training: drop-path and token masking in the Transformer stage, SigLIP's bias, LTT,
    checkpointing."""
    siglip = config.loss == "siglip"
    model = build_clip(arch, text, drop_path=config.drop_path, init_logit_scale=math.log(10) if siglip else None,
                       mask_ratio=config.mask_ratio)
    if siglip:  # open_clip's SigLIP configs: logit scale 10, bias -10
        model.logit_bias = nn.Parameter(torch.full_like(model.logit_scale, -10.0))
    if config.pretrained:
        load_pretrained(model, config.pretrained)
    if config.lock_text:
        load_text_tower(model, config.lock_text)
        model.lock_text_tower(unlocked_layers=config.lock_text_unlocked_layers, freeze_layer_norm=True)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def load_pretrained(model: open_clip.CustomTextCLIP, path: str | os.PathLike) -> None:
    """Load a whole model's weights, strictly: a fine-tune's start. Accepts what `load_text_tower` accepts, and
    `nas.export` directories with safetensors weights (`vitamin-nas export`, `supernet export`)."""
    try:
        model.load_state_dict(_state_dict(path, "pretrained"), strict=True)
    except RuntimeError as err:
        raise ConfigError(f"does not match the run's arch and text tower: {err}", source=str(path),
                          field="pretrained") from None


def load_text_tower(model: open_clip.CustomTextCLIP, path: str | os.PathLike) -> None:
    """Load the text tower (`model.text`) from a checkpoint, strictly: LTT's pretrained text encoder.

    Accepts this trainer's checkpoints, `nas.export` directories and open_clip state dicts, both the
    custom-text layout (`text.*`) and the classic CLIP one (`transformer.*`, `token_embedding`, ...).
    """
    state = _state_dict(path, "lock_text")
    text_state = {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    if not text_state:
        raise ConfigError("holds no text tower (no text.* or token_embedding weights)", source=str(path),
                          field="lock_text")
    try:
        model.text.load_state_dict(text_state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"text tower does not match the run's text tower and embed_dim: {err}",
                          source=str(path), field="lock_text") from None


def _state_dict(path: str | os.PathLike, field: str) -> dict[str, torch.Tensor]:
    """The CLIP state dict (custom-text layout) of a checkpoint, an export directory or an open_clip state dict."""
    path = Path(path)
    file = _state_dict_file(path) if path.is_dir() else path
    if not file.exists():
        raise ConfigError("checkpoint not found", source=str(path), field=field)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = load_checkpoint(file)
        state = state.get("model", state.get("state_dict", state))
    if "text.token_embedding.weight" not in state and "token_embedding.weight" in state:
        state = open_clip.model.convert_to_custom_text_state_dict(state)
    return state


def _state_dict_file(directory: Path) -> Path:
    for name in (WEIGHTS_FILE, "open_clip_pytorch_model.bin", CHECKPOINT):
        if (directory / name).exists():
            return directory / name
    return directory / CHECKPOINT


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip_train's split: no weight decay on gains, biases, norms and the logit scale/bias."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_schedule(warmup: int, steps: int) -> Callable[[int], float]:
    """open_clip_train's `cosine_lr` as a LambdaLR factor: (step + 1) / warmup, then half a cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    return factor


def make_loss(config: TrainConfig, runtime: Runtime) -> nn.Module:
    if config.loss == "siglip":
        return SigLipLoss(rank=runtime.rank, world_size=runtime.world_size)
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=runtime.rank,
                    world_size=runtime.world_size)
