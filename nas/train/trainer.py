"""One optimizer step of a run: its model, AdamW, cosine schedule and loss (`nas.train.recipe`), with gradient
accumulation and `torch.compile` that falls back to eager."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from nas.train.checkpoint import rng_state, set_rng_state
from nas.train.recipe import LOGIT_SCALE_MAX, cosine_schedule, make_loss, param_groups
from nas.train.runtime import Runtime, is_oom
from nas.train_config import TrainConfig


class Trainer:
    """Model, optimizer, schedule and loss of one run, and the optimizer step (with accumulation)."""

    def __init__(self, model: nn.Module, config: TrainConfig, runtime: Runtime):
        self.config = config
        self.runtime = runtime
        self.model = model.to(runtime.device)
        self.module = self._data_parallel(self.model)
        self.forward = self.module  # the compiled module once `enable_compile` ran, until compilation fails
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config.weight_decay), lr=config.lr,
                                           betas=config.betas, eps=config.eps,
                                           fused=runtime.device.type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           cosine_schedule(config.warmup, config.steps))
        self.loss = make_loss(config, runtime)
        self.step = 0
        self.compile = {"requested": config.compile, "compiled": False, "error": None, "compile_s": 0.0}
        self.compiled_from: int | None = None
        self.compiled_batch: int | None = None

    def _data_parallel(self, model: nn.Module) -> nn.Module:
        """The module the step runs: with several ranks, DDP around the model (it all-reduces the gradients in
        the backward pass); `nas.supernet.sandwich` averages them itself."""
        if not self.runtime.distributed:
            return model
        device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                   static_graph=self.config.grad_checkpointing)

    def enable_compile(self) -> None:
        """Compile the forward pass; the first step after this compiles (see `compiling`)."""
        self.forward = torch.compile(self.module, backend=self.config.compile_backend)
        self.compile["compiled"] = True
        self.compiled_from = self.step

    @property
    def compiling(self) -> bool:
        """Whether the next step is the one that compiles (its time is compilation, not training)."""
        return self.compile["compiled"] and self.step == self.compiled_from

    def train_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One optimizer step over `micro` (one or `accum_freq` micro-batches); returns the loss, on device.

        A compiled step that fails (the first, or a recompilation) reruns eagerly and the run records why.
        Compilation fails inside the forward or backward pass, before the optimizer steps, so the rerun starts
        from the same weights; the RNG is rewound so that it also draws the same drop-path masks.

        The compiled forward serves the micro-batch size it was compiled for; a smaller one (the budget's last
        batch) runs eagerly: recompiling for a dynamic batch would cost more than the step and count as training.
        """
        if not self.compile["compiled"]:
            return self._step(micro, self.module)
        self.compiled_batch = self.compiled_batch or len(micro[0][0])
        if any(len(images) != self.compiled_batch for images, _ in micro):
            return self._step(micro, self.module)
        state, step = rng_state(), self.step
        try:
            return self._step(micro, self.forward)
        except Exception as err:
            if is_oom(err):
                raise
            self.compile.update(compiled=False, error=f"{type(err).__name__}: {err}"[:2000])
            self.forward, self.step = self.module, step
            set_rng_state(state)
            return self._step(micro, self.module)

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], forward: Callable) -> torch.Tensor:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [(i.to(self.runtime.device, non_blocking=True), t.to(self.runtime.device, non_blocking=True))
                 for i, t in micro]
        loss = self._single(forward, *micro[0]) if len(micro) == 1 else self._accumulated(forward, micro)
        if self.config.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        self.step += 1
        return loss

    def _loss(self, out: Mapping[str, torch.Tensor], **features: torch.Tensor) -> torch.Tensor:
        kwargs = {"image_features": out["image_features"], "text_features": out["text_features"],
                  "logit_scale": out["logit_scale"], **features}
        if self.config.loss == "siglip":
            kwargs["logit_bias"] = out["logit_bias"]
        return self.loss(**kwargs)

    def _single(self, forward: Callable, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            loss = self._loss(forward(images, texts))
        loss.backward()
        return loss.detach()

    def _accumulated(self, forward: Callable, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """open_clip_train's `--accum-freq`: the features of every micro-batch are each one's negatives.

        Features are first computed without gradients; then each micro-batch is run again with gradients,
        its cached features swapped for live ones. Unlike open_clip_train, the logit scale (and bias) take
        gradient from one pass only, so the step equals a step on the whole batch.
        """
        with torch.no_grad(), self.runtime.autocast():
            cached = [forward(images, texts) for images, texts in micro]
        last = len(micro) - 1
        for j, (images, texts) in enumerate(micro):
            sync = nullcontext() if j == last or not self.runtime.distributed else self.module.no_sync()
            with sync:
                with self.runtime.autocast():
                    out = dict(forward(images, texts))
                    if j != last:
                        out = {k: v.detach() if k in ("logit_scale", "logit_bias") else v for k, v in out.items()}
                    features = {key: torch.cat([c[key] for c in cached[:j]] + [out[key]] +
                                               [c[key] for c in cached[j + 1:]])
                                for key in ("image_features", "text_features")}
                    loss = self._loss(out, **features)
                loss.backward()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
