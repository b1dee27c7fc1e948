"""Preprocessing exactly as open_clip does it, so that a proxy trained here is comparable to open_clip runs.

Training: RandomResizedCrop (bicubic, configurable scale range), then optionally the colour jitter and
grayscale of the ViTamin long schedule, then CLIP's mean/std normalisation. Evaluation: bicubic resize of
the shorter side and a center crop. Both come from `open_clip.image_transform`; only the choice of
options lives here, and `BatchPreprocess`, which runs its final ToTensor and Normalize once per batch
(same values, less work). Text goes through open_clip's tokenizer.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from nas.data.source import Augment
from nas.errors import ConfigError


def image_transform(image_size: int, train: bool, augment: Augment | None = None) -> Callable:
    """open_clip's transform: PIL RGB image in, normalised float tensor (3, image_size, image_size) out."""
    from open_clip import image_transform as open_clip_transform
    from open_clip.transform import AugmentationCfg

    augment = augment or Augment()
    config = AugmentationCfg(scale=augment.scale, color_jitter=augment.color_jitter,
                             color_jitter_prob=augment.color_jitter_prob or None,
                             gray_scale_prob=augment.grayscale_prob or None)
    with warnings.catch_warnings():
        # open_clip applies jitter and grayscale but still warns that they are "unused" (open_clip 3.3).
        warnings.filterwarnings("ignore", message="Unused augmentation cfg items")
        return open_clip_transform(image_size, is_train=train, interpolation="bicubic", aug_cfg=config)


class BatchPreprocess:
    """open_clip's transform with its last two steps, ToTensor and Normalize, done once per batch.

    The per-image part (crop, resize, jitter, grayscale) runs on PIL images as open_clip runs it; the
    batch is then stacked as uint8, converted and normalised in place with the same operations in the same
    order, so the values are exactly open_clip's, at about half the tensor work and per-image overhead.
    """

    def __init__(self, transform: Callable, image_size: int | None = None):
        from torchvision.transforms import Compose, Normalize, ToTensor

        self.image_size = image_size  # the tower's: smaller images are upsampled to it, said once (`_check_size`)

        steps = list(getattr(transform, "transforms", []))
        if len(steps) < 2 or not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
            raise ValueError(f"expected a transform ending in ToTensor, Normalize; got {transform}")
        self.per_image = Compose(steps[:-2])
        self.mean = torch.tensor(steps[-1].mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(steps[-1].std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.image_size is not None and images:
            self._check_size(images[0])
        pixels = np.stack([np.asarray(self.per_image(image), dtype=np.uint8) for image in images])
        batch = torch.empty((len(images), pixels.shape[3], pixels.shape[1], pixels.shape[2]), dtype=torch.float32)
        batch.copy_(torch.from_numpy(pixels).permute(0, 3, 1, 2))
        return batch.div_(255).sub_(self.mean).div_(self.std)


    def _check_size(self, image: Image.Image) -> None:
        """Warn (once) when the data's images are smaller than the tower's input: they are upsampled, and the
        tower sees no detail the data does not have."""
        if min(image.size) < self.image_size:
            warnings.warn(f"images of {image.size[0]}x{image.size[1]} px are upsampled to the tower's "
                          f"{self.image_size} px input: it learns no detail finer than the data's (write the data at "
                          f"{self.image_size} px or more, or choose a {min(image.size)} px tower)", stacklevel=2)
        self.image_size = None


@functools.lru_cache(maxsize=8)
def tokenizer(name: str = "ViT-B-32", context_length: int = 77) -> Callable:
    """open_clip's tokenizer for a model name (CLIP's BPE for the OpenAI-style towers; no download).

    Cached: building CLIP's BPE tables takes about a second, and every stream and eval set needs one.
    """
    import open_clip

    if context_length < 2:
        raise ConfigError(f"must be at least 2, got {context_length}", field="context_length")
    return open_clip.get_tokenizer(name, context_length=context_length)
