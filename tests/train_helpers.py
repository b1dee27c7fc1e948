"""Tiny candidates and deterministic batch factories for the training tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from nas.arch import Arch, Stage, Transformer
from nas.presets import TextTower

#: The smallest ViTamin-shaped tower: conv stem, one MBConv stage, a 1-block Transformer stage at 32 px.
TINY_ARCH = Arch(stem="conv", stem_width=8, stages=(Stage("mbconv", 1, 16),),
                 transformer=Transformer(width=32, depth=1, heads=2), image_size=32, embed_dim=16)
TINY_TEXT = TextTower(width=32, layers=1, heads=2, context_length=8, vocab_size=500)


def random_pairs(start: int, batch_size: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (images, tokens) batches; batch k depends only on (seed, k), so a stream can start anywhere."""
    index = start // batch_size
    while True:
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        images = torch.randn(batch_size, 3, TINY_ARCH.image_size, TINY_ARCH.image_size, generator=generator)
        tokens = torch.randint(1, TINY_TEXT.vocab_size, (batch_size, TINY_TEXT.context_length), generator=generator)
        yield images, tokens
        index += 1


def factory(batch_size: int, seed: int = 0):
    """A `nas.train` data factory over `random_pairs`."""
    return lambda start: random_pairs(start, batch_size, seed)


def stream_run(shards: str, out: str, samples: int = 160):
    """A run on the real data stream with drop-path and a checkpoint every 4 steps (the resume tests' run)."""
    from nas.data import DataSource
    from nas.train import train
    from nas.train_config import TrainConfig

    text = TextTower(width=32, layers=1, heads=2, context_length=16)
    config = TrainConfig(samples=samples, batch_size=8, warmup=2, drop_path=0.1, rungs=(samples // 2,),
                         checkpoint_every=32, log_every=2, workers=1)
    return train(TINY_ARCH, text, DataSource(shards, shuffle_buffer=50), config, out=out, device="cpu")
