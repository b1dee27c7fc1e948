"""Zero-cost proxies: training-free, label-free scores of a candidate at initialisation.

NAS users compare such scores with trained accuracy to learn whether a search could have ranked its
candidates without training them. Two published ones are computed here, each on the image tower alone:

- `naswot` (Mellor et al., "Neural Architecture Search without Training", ICML 2021). Each input of a
  mini-batch gets a binary code with one bit per unit of every activation layer: 1 where the unit is
  active. The score is log |K_H| with K_H[i, j] = N_A - d_H(c_i, c_j), N_A the number of units and d_H the
  Hamming distance: architectures that give different inputs different activation patterns score higher.
  The paper's units are ReLUs, active where their input is positive. These towers use GELU, which has no
  inactive region, so a unit's bit is the sign of the activation's *input* (x > 0), which for ReLU is the
  paper's code exactly and for GELU splits at the same point (GELU(x) > 0 iff x > 0). Every GELU, ReLU
  and SiLU module counts, in convolution stages (one unit per channel and pixel) and in Transformer MLPs
  (one per token and hidden channel); attention's softmax does not.
- `synflow` (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
  flow", NeurIPS 2020, as a NAS proxy in Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS",
  ICLR 2021). Every parameter is replaced by its absolute value, an all-ones image goes through the
  network, R is the sum of its outputs and the score is sum |theta * dR/dtheta| over the weights of the
  convolution and linear layers (biases, norms and embeddings take part in R but are not summed, as in
  Abdelfattah et al.'s code). Normalisation layers are bypassed, as that code does with BatchNorm for
  synflow (its `bn=False`: the norm's forward becomes the identity, affine parameters included); every
  LayerNorm here, over channels or tokens, is made the identity the same way. A timm norm-act layer (the
  stem's `LayerNormAct2d`) keeps its activation. It runs in float64, because the product of absolute weights over depth
  overflows float32. Without norms a GeGLU block multiplies two linear maps of its input, so the output
  is a polynomial whose degree doubles with every GeGLU block: towers with many of them exceed even
  float64 (every ViTamin preset, and 47 of the 432 towers of search_spaces/tiny.yaml) and score
  `inf`, tied with each other and above every finite score.

    scores = zero_cost_scores(arch)     # {"naswot": ..., "synflow": ...}, deterministic for (arch, seed)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from timm.layers.activations import GELU as TimmGELU
from timm.layers.activations import GELUTanh
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nas.arch import Arch
from nas.errors import ConfigError
from nas.presets import TextTower

#: Activation modules whose input sign is a unit's NASWOT bit.
ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, TimmGELU, GELUTanh)
#: Normalisation modules that synflow bypasses.
NORMS = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)
#: Modules whose weights synflow sums over.
SYNFLOW_LAYERS = (nn.Conv2d, nn.Linear)
#: Half the NASWOT paper's 128, so that a tiny-space candidate scores in a fraction of a second on one core.
#: The log-determinant grows with the batch: compare scores taken at one batch size only.
NASWOT_BATCH = 64


@torch.no_grad()
def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """log |K_H| of `model`'s activation codes over the batch `images` (Mellor et al. 2021, eq. 2).

    K_H[i, j] = c_i.c_j + (1 - c_i).(1 - c_j), the number of units on which inputs i and j agree, which
    is N_A - d_H(c_i, c_j). -inf when two inputs share a code (K_H is then singular).
    """
    batch = images.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64)

    def add_codes(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        nonlocal kernel
        codes = (inputs[0] > 0).reshape(batch, -1)
        # counts below 2^24 are exact in float32, which multiplies several times faster than float64
        codes = codes.to(torch.float32 if codes.shape[1] < 2**24 else torch.float64)
        agree = (codes @ codes.T).to(torch.float64)
        active = codes.sum(dim=1, dtype=torch.float64)
        # c_i.c_j + (1-c_i).(1-c_j) = N - |c_i| - |c_j| + 2 c_i.c_j: one matmul instead of two
        kernel += codes.shape[1] - active[:, None] - active[None, :] + 2 * agree

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(add_codes) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    try:
        if not handles:
            raise ConfigError(f"has no activation layer of the kinds NASWOT counts ({_names(ACTIVATIONS)})",
                              field="model")
        model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def synflow(model: nn.Module, images: torch.Tensor) -> float:
    """sum |theta * dR/dtheta| over conv and linear weights of |model| on an all-ones input, in float64.

    `images` gives the input shape only (one all-ones image of `images.shape[1:]`); `model` is left as it
    was: the score is computed on a copy.
    """
    flow = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for param in flow.parameters():
            param.abs_()
    for module in flow.modules():
        if isinstance(module, NORMS):
            module.forward = _without_normalisation(module)
    flow.zero_grad(set_to_none=True)
    flow(torch.ones((1, *images.shape[1:]), dtype=torch.float64)).sum().backward()
    total = 0.0
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, SYNFLOW_LAYERS) and module.weight.grad is not None:
                total += float((module.weight * module.weight.grad).abs().sum())
    # every term is >= 0, so a NaN can only come from inf - inf or inf * 0 after an overflow
    return total if math.isfinite(total) else math.inf


def _without_normalisation(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The norm layer's forward minus the normalisation; timm's norm-act layers keep dropout and activation."""
    drop, act = getattr(norm, "drop", None), getattr(norm, "act", None)
    if drop is None and act is None:
        return lambda x: x
    return lambda x: act(drop(x))


PROXIES: Mapping[str, Callable[[nn.Module, torch.Tensor], float]] = {"naswot": naswot, "synflow": synflow}
"""Each zero-cost proxy by its name in results and study files: higher is predicted better for all."""


def zero_cost_scores(arch: Arch, text: TextTower | None = None, *, batch_size: int = NASWOT_BATCH, seed: int = 0,
                     names: Iterable[str] = ("naswot", "synflow")) -> dict[str, float]:
    """The named proxies of `arch`'s image tower at initialisation, on CPU, deterministic for `seed`.

    The tower is built under `torch.manual_seed(seed)` (the caller's RNG state is left as it was) and scored
    on a batch of `batch_size` standard-normal images at `arch.image_size`, drawn from the same seed: what
    CLIP-normalised images look like to the first layer, and what no candidate's score may depend on.
    `text` is accepted so that a caller passes (arch, text) as to `nas.cost.cost`; the text tower is the
    same for every candidate of a study, so it does not enter a score.
    """
    from nas.models import build_vision_tower

    names = tuple(names)
    unknown = [name for name in names if name not in PROXIES]
    if unknown or not names:
        raise ConfigError(f"{'unknown proxies ' + ', '.join(map(str, unknown)) if unknown else 'no proxy named'}; "
                          f"allowed: {', '.join(PROXIES)}", field="names")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"must be an integer >= 2 (NASWOT compares inputs), got {batch_size!r}",
                          field="batch_size")
    if text is not None and not isinstance(text, TextTower):
        raise ConfigError(f"must be a TextTower or None, got {type(text).__name__}", field="text")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = build_vision_tower(arch)
        images = torch.randn(batch_size, 3, arch.image_size, arch.image_size,
                             generator=torch.Generator().manual_seed(seed))
    return {name: PROXIES[name](tower, images) for name in names}


def _names(types: tuple[type, ...]) -> str:
    return ", ".join(t.__name__ for t in types)
