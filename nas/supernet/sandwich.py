"""The sandwich rule with in-place distillation (BigNAS): one optimizer step trains the largest subnet, the
smallest and n random ones on the same batch, the smaller ones also matching the largest one's logits.

The text tower runs once per step and every subnet's image features meet the same text features; the subnets'
losses are averaged and take one backward pass, so the step's gradient is the sum of what each subnet's loss
would give alone.

On several ranks (`nas.supernet.data_parallel`), each with its shard of every batch, a step is the one-process
step on the whole batch:

- Every rank draws the same subnets: their seed is the run's seed and the step, not the rank (`step_seeds`);
  otherwise the ranks would train different subnets and their averaged gradients would mix them. The drop-path
  masks are each rank's own, as each sample of one process's batch has its own.
- The CLIP loss and the distillation score each rank's images against every rank's captions and its captions
  against every rank's images (open_clip's local loss, the features gathered with their gradients), so the
  ranks' losses average to the whole batch's and their gradients, averaged, are its gradient.
- After the backward pass the gradients are averaged over the ranks by one all-reduce of the gradients that
  exist, flattened (`average_gradients`). Not DDP: its reducer is driven by its module's forward, while a
  sandwich step calls the supernet's towers once per subnet; and parameters no subnet of the step used (another
  block type's path, channels past the largest sampled width) have no gradient, which DDP could only handle by
  searching the autograd graph every step (`find_unused_parameters`). Since the ranks trained the same subnets,
  the same parameters hold gradients on every rank, in the same order: reducing exactly those is correct, and
  the others keep no gradient, as in one process, so AdamW leaves them as they are (no decay, no momentum).
  The supernet's norms are LayerNorms: there are no batch statistics to share.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from nas.arch import Arch
from nas.errors import ConfigError
from nas.supernet.supernet import Supernet
from nas.train.runtime import Runtime
from nas.train.trainer import Trainer
from nas.train_config import TrainConfig


def step_seeds(seed: int, step: int, rank: int) -> tuple[int, int]:
    """The seeds of a step's randomness: which subnets it trains (the same on every rank) and the rank's drop-path
    masks (its own). Rank 0's masks are seeded as a one-process run's."""
    shared = seed * 2**32 + step
    return shared, shared if rank == 0 else hash((shared, rank)) % 2**63  # an int tuple's hash is not salted


#: Logits per image and per caption, as open_clip's `ClipLoss.get_logits` gives them.
Logits = tuple[torch.Tensor, torch.Tensor]


def distillation(student: Logits, teacher: Logits) -> torch.Tensor:
    """KL(teacher || student) of the softmax over captions per image and over images per caption, averaged: the
    student matches the teacher's logits in both directions the CLIP loss scores (this rank's images against
    every rank's captions, this rank's captions against every rank's images). The teacher takes no gradient."""

    def kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t.detach(), dim=-1), log_target=True,
                        reduction="batchmean")

    return (kl(student[0], teacher[0]) + kl(student[1], teacher[1])) / 2


def average_gradients(parameters: Iterable[torch.Tensor], runtime: Runtime) -> None:
    """Average over the ranks the gradients these parameters hold (the same ones on every rank, in the same
    order), in one all-reduce of them flattened."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not runtime.distributed or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= runtime.world_size
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(mean.view_as(grad))


class SandwichTrainer(Trainer):
    """The trainer's optimizer step (`nas.train.trainer`) on a `Supernet`, each step over the sandwich's subnets.

    A step's randomness (which subnets, their drop-path masks) is seeded by the run's seed and the step, so a run
    resumed from a checkpoint takes the steps the uninterrupted run takes, whatever else drew from the global
    generators in between (a data loader started anew). `sampled` holds the last step's subnets, largest first."""

    def __init__(self, supernet: Supernet, config: TrainConfig, runtime: Runtime):
        if config.accum_freq != 1 or config.compile or config.loss != "clip":
            raise ConfigError("a supernet trains with the CLIP loss, eagerly and without accumulation (accum_freq 1, "
                              "compile false, loss clip)", field="train")
        super().__init__(supernet, config, runtime)
        self.supernet = supernet
        self.sampled: tuple[Arch, ...] = ()
        if runtime.distributed:  # every rank starts from rank 0's weights (as DDP makes them)
            for tensor in supernet.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def _data_parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # the step averages the gradients itself (`average_gradients`)

    def subnets(self, rng: random.Random) -> tuple[Arch, ...]:
        """The sandwich: the largest subnet, the smallest, then `random_subnets` drawn from the space."""
        net = self.supernet
        return (net.largest, net.smallest, *(net.sample(rng) for _ in range(net.config.random_subnets)))

    def _single(self, forward, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        subnets_seed, masks_seed = step_seeds(self.config.seed, self.step, self.runtime.rank)
        torch.manual_seed(masks_seed)
        self.sampled = self.subnets(random.Random(subnets_seed))
        net = self.supernet
        with self.runtime.autocast():
            text_features = net.encode_text(texts)
            scale = net.logit_scale.exp()
            teacher = None
            total = torch.zeros((), device=images.device)
            for arch in self.sampled:
                image_features = net.encode_image(arch, images)
                loss = self.loss(image_features=image_features, text_features=text_features, logit_scale=scale)
                if net.config.distill_weight:
                    student = self.loss.get_logits(image_features, text_features, scale)
                    if teacher is None:
                        teacher = student
                    else:
                        loss = loss + net.config.distill_weight * distillation(student, teacher)
                total = total + loss
            total = total / len(self.sampled)
        total.backward()
        average_gradients(net.parameters(), self.runtime)
        return total.detach()
