"""The sandwich rule with in-place distillation (BigNAS): one optimizer step trains the largest subnet, the
smallest and n random ones on the same batch, the smaller ones also matching the largest one's logits.

The text tower runs once per step and every subnet's image features meet the same text features; the subnets'
losses are averaged and take one backward pass, so the step's gradient is the sum of what each subnet's loss
would give alone.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from nas.arch import Arch
from nas.errors import ConfigError
from nas.supernet.supernet import Supernet
from nas.train.runtime import Runtime
from nas.train.trainer import Trainer
from nas.train_config import TrainConfig


def logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's image-to-text logits (rows: images, columns: captions)."""
    return logit_scale * image_features @ text_features.T


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the softmax over captions per image and over images per caption, averaged: the
    student matches the teacher's logits in both directions the CLIP loss scores. The teacher takes no gradient."""
    teacher = teacher.detach()

    def kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")

    return (kl(student, teacher) + kl(student.T, teacher.T)) / 2


class SandwichTrainer(Trainer):
    """The trainer's optimizer step (`nas.train.trainer`) on a `Supernet`, each step over the sandwich's subnets.

    A step's randomness (which subnets, their drop-path masks) is seeded by the run's seed and the step, so a run
    resumed from a checkpoint takes the steps the uninterrupted run takes, whatever else drew from the global
    generators in between (a data loader started anew). `sampled` holds the last step's subnets, largest first."""

    def __init__(self, supernet: Supernet, config: TrainConfig, runtime: Runtime):
        if config.accum_freq != 1 or config.compile or runtime.distributed or config.loss != "clip":
            raise ConfigError("a supernet trains with the CLIP loss, on one rank, eagerly and without accumulation "
                              "(accum_freq 1, compile false, loss clip)", field="train")
        super().__init__(supernet, config, runtime)
        self.supernet = supernet
        self.sampled: tuple[Arch, ...] = ()

    def subnets(self, rng: random.Random) -> tuple[Arch, ...]:
        """The sandwich: the largest subnet, the smallest, then `random_subnets` drawn from the space."""
        net = self.supernet
        return (net.largest, net.smallest, *(net.sample(rng) for _ in range(net.config.random_subnets)))

    def _single(self, forward, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        seed = self.config.seed * 2**32 + self.step
        torch.manual_seed(seed)
        self.sampled = self.subnets(random.Random(seed))
        net = self.supernet
        with self.runtime.autocast():
            text_features = net.encode_text(texts)
            scale = net.logit_scale.exp()
            teacher = None
            total = torch.zeros((), device=images.device)
            for arch in self.sampled:
                image_features = net.encode_image(arch, images)
                loss = self.loss(image_features=image_features, text_features=text_features, logit_scale=scale)
                student = logits(image_features, text_features, scale)
                if teacher is None:
                    teacher = student
                elif net.config.distill_weight:
                    loss = loss + net.config.distill_weight * distillation(student, teacher)
                total = total + loss
            total = total / len(self.sampled)
        total.backward()
        return total.detach()
