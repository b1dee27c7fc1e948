"""`Supernet`: every tower of a search space in one set of weights, as one-shot NAS shares them.

Sizes are slices (OFA, AutoFormer): a subnet takes the first channels, heads, hidden units and blocks of the
largest weights. A stage whose block type is a choice holds one path per block type (Single Path One-Shot), and
the Transformer stage one MLP per MLP type (their timm modules differ); the text tower and the logit scale are
shared by every subnet. The weights are those of the space's largest towers, built and initialised by
`nas.models` from the same timm blocks as any candidate.

A subnet is an `Arch` of the space. It runs as the very module `nas.models.build_vision_tower` builds for it (a
skeleton on the meta device, cached), called with the sliced supernet weights in place of its own
(`torch.func.functional_call`): the subnet computes what the stand-alone tower computes with those weights, and
its gradients land in the shared weights it was sliced from. `subnet_state_dict` is that stand-alone model's state
dict (`nas.models.build_clip`), for `nas.export`. Its cost is the analytic cost model's (`nas.cost`).

Hybrid spaces only (a conv stem, 2D stages of MBConv-LN, ConvNeXt or attention blocks, a Transformer stage): the
ViTamin family. Their norms are LayerNorms, so a subnet needs no recalibrated batch statistics.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ATTENTION_BLOCKS, Arch, Stage, Transformer
from nas.cost import Cost
from nas.errors import ConfigError
from nas.models import build_clip, build_vision_tower
from nas.presets import TextTower
from nas.space import SearchSpace
from nas.supernet.config import SupernetConfig

#: The keys of a hybrid tower's 2D stages (`nas.models.tower.ConvStages`): each stage's blocks sit under a path.
STAGE_PREFIX = "trunk.patch_embed.backbone.stages."
#: Weights whose output rows are three slices (query, key, value; timm's `Attention.qkv`), sliced each alike.
QKV_SUFFIXES = ("attn.qkv.weight", "attn.qkv.bias")
#: Stand-alone skeletons kept per supernet (a sandwich step uses 2 + n subnets).
SKELETONS = 16


def supernet_key(arch: Arch, key: str) -> str:
    """The supernet's name of a stand-alone tower's weight: a 2D stage's blocks are under its block type's path."""
    if not key.startswith(STAGE_PREFIX):
        return key
    index, rest = key[len(STAGE_PREFIX):].split(".", 1)
    return f"{STAGE_PREFIX}{index}.{arch.stages[int(index)].block}.{rest}"


def slice_weight(weight: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    """The first entries of `weight` along every dimension (the query, key and value rows of qkv each alike)."""
    if key.endswith(QKV_SUFFIXES):
        return weight.unflatten(0, (3, -1))[(slice(None), *(slice(0, n) for n in (shape[0] // 3, *shape[1:])))] \
            .flatten(0, 1)
    return weight[tuple(slice(0, n) for n in shape)]


def _fits(shape: torch.Size, within: torch.Size, key: str) -> bool:
    rows = (3, shape[0] // 3, *shape[1:]) if key.endswith(QKV_SUFFIXES) else shape
    room = (3, within[0] // 3, *within[1:]) if key.endswith(QKV_SUFFIXES) else within
    return len(rows) == len(room) and all(n <= m for n, m in zip(rows, room, strict=True))


class Supernet(nn.Module):
    """The weight-sharing supernet of `space` at `config.image_size`; its subnets are the space's feasible archs
    at that resolution (`candidates`), `largest` and `smallest` by image MACs (then parameters)."""

    def __init__(self, space: SearchSpace, config: SupernetConfig | None = None, drop_path: float = 0.0):
        super().__init__()
        self.space, self.config, self.drop_path = space, config or SupernetConfig(), drop_path
        self.candidates = _candidates(space, self.config.image_size)
        self.image_size = self.candidates[0].image_size
        self._candidates = frozenset(self.candidates)
        costs = {arch: space.cost(arch) for arch in self.candidates}
        by_size = sorted(self.candidates, key=lambda a: (costs[a].image_macs, costs[a].image_params))
        self.smallest, self.largest = by_size[0], by_size[-1]
        self.paths = envelope(space, self.candidates)
        self.image = nn.Module()
        for key, tensor in _largest_weights(self.paths).items():
            _register(self.image, key, nn.Parameter(tensor))
        clip = build_clip(self.paths[0], space.text)
        self.text, self.logit_scale = clip.text, clip.logit_scale
        self._skeletons: OrderedDict[str, nn.Module] = OrderedDict()

    @property
    def text_tower(self) -> TextTower:
        return self.space.text

    def cost(self, arch: Arch) -> Cost:
        """The analytic cost of the subnet: that of its arch, as `nas.cost` counts every candidate's."""
        return self.space.cost(arch)

    def check(self, arch: Arch, source: str = "arch") -> Arch:
        """`arch` when it is a subnet of this supernet; a `ConfigError` naming `source` otherwise."""
        if arch.image_size != self.image_size:
            raise ConfigError(f"{arch.name()} is at {arch.image_size} px; the supernet is at {self.image_size} px",
                              source=source, field="image_size")
        if arch not in self._candidates:
            raise ConfigError(f"{arch.name()} is not a feasible arch of the space {self.space.source}", source=source)
        return arch

    def sample(self, rng: random.Random) -> Arch:
        """A subnet drawn as the space draws a candidate (uniform per parameter, feasible), at the resolution."""
        while (arch := self.space.sample(rng)).image_size != self.image_size:
            pass
        return arch

    # ---- subnets -------------------------------------------------------------------------------------------
    def skeleton(self, arch: Arch) -> nn.Module:
        """The stand-alone tower of `arch` on the meta device: its modules, none of its weights."""
        tower = self._skeletons.pop(arch.arch_id, None)
        if tower is None:
            with torch.device("meta"):
                tower = build_vision_tower(arch, drop_path=self.drop_path, init_weights=False)
        self._skeletons[arch.arch_id] = tower
        while len(self._skeletons) > SKELETONS:
            self._skeletons.popitem(last=False)
        return tower

    def subnet_weights(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The stand-alone tower's weights (`build_vision_tower(arch)`'s keys), sliced from the shared ones."""
        weights = {}
        for key, meta in self.skeleton(arch).state_dict(keep_vars=True).items():
            try:
                shared = self.image.get_parameter(supernet_key(arch, key))
            except AttributeError:
                shared = None
            if shared is None or not _fits(meta.shape, shared.shape, key):
                raise ConfigError(f"{arch.name()} needs {key} of shape {tuple(meta.shape)}, which the supernet of "
                                  f"{self.space.source} does not hold", field="arch")
            weights[key] = slice_weight(shared, meta.shape, key)
        return weights

    def encode_image(self, arch: Arch, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        tower = self.skeleton(arch).train(self.training)
        features = torch.func.functional_call(tower, self.subnet_weights(arch), (images,))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, texts: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.text(texts)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, texts: torch.Tensor, arch: Arch | None = None) -> dict[str, Any]:
        """open_clip's output dict for the subnet `arch` (default the largest)."""
        return {"image_features": self.encode_image(arch or self.largest, images),
                "text_features": self.encode_text(texts), "logit_scale": self.logit_scale.exp()}

    def subnet_state_dict(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The state dict of `build_clip(arch, text)` holding the subnet's weights (copies)."""
        state = {f"visual.{k}": v.detach().clone() for k, v in self.subnet_weights(arch).items()}
        state.update({f"text.{k}": v.detach().clone() for k, v in self.text.state_dict().items()})
        state["logit_scale"] = self.logit_scale.detach().clone()
        return state


def _candidates(space: SearchSpace, image_size: int | None) -> list[Arch]:
    """The space's feasible archs at `image_size` (default the largest): the supernet's subnets."""
    if not space.finite:
        raise ConfigError("a supernet needs a finite space (every range with a step)", source=space.source)
    archs = list(space.enumerate())
    if not archs:
        raise ConfigError("no feasible arch", source=space.source, field="constraints")
    size = image_size or max(a.image_size for a in archs)
    archs = [a for a in archs if a.image_size == size]
    if not archs:
        raise ConfigError(f"no feasible arch at {size} px", source=space.source, field="image_size")
    for field in ("stem", "embed_dim", "pos_embed", "pool"):
        values = sorted({str(getattr(a, field)) for a in archs})
        if len(values) > 1:
            raise ConfigError(f"takes {', '.join(values)}; a supernet shares one", source=space.source, field=field)
    if archs[0].stem != "conv" or archs[0].transformer is None:
        raise ConfigError("a supernet is built of hybrid towers (conv stem, 2D stages, a Transformer stage)",
                          source=space.source, field="transformer" if archs[0].stem == "conv" else "stem")
    return archs


def envelope(space: SearchSpace, archs: list[Arch]) -> list[Arch]:
    """The largest towers of the space: every stage at its widest, each of its block types at its deepest and
    widest expansion, the Transformer at its widest and deepest with each MLP type at its widest ratio. Each path
    (block type of a stage, MLP type) is in one of them at least; their weights hold every subnet's."""
    variants = [sorted({(a.stages[i].block, a.stages[i].mlp) for a in archs}, key=str)
                for i in range(len(archs[0].stages))]
    mlps = sorted({a.transformer.mlp for a in archs})
    largest = []
    for k in range(max([len(mlps), *map(len, variants)])):
        stages = []
        for i, choices in enumerate(variants):
            block, mlp = choices[k % len(choices)]
            same = [a.stages[i] for a in archs if (a.stages[i].block, a.stages[i].mlp) == (block, mlp)]
            kernels = {s.kernel for s in same}
            if len(kernels) > 1:
                raise ConfigError(f"a {block} stage takes kernels {sorted(kernels)}; a supernet slices channels, not "
                                  "kernels", source=space.source, field=f"stages.{i}.kernel")
            stages.append(Stage(block, max(s.depth for s in same), max(a.stages[i].width for a in archs),
                                max(s.expansion for s in same), kernel=kernels.pop(),
                                heads=1 if block in ATTENTION_BLOCKS else None, mlp=mlp))
        mlp = mlps[k % len(mlps)]
        transformer = Transformer(max(a.transformer.width for a in archs), max(a.transformer.depth for a in archs),
                                  heads=1, mlp=mlp, mlp_ratio=max(a.transformer.mlp_ratio for a in archs
                                                                  if a.transformer.mlp == mlp))
        try:
            largest.append(archs[0].replace(stages=tuple(stages), transformer=transformer,
                                            stem_width=max(a.stem_width for a in archs)))
        except ConfigError as err:
            raise ConfigError(f"the space's largest tower is no tower: {err.message}", source=space.source,
                              field=err.field) from None
    return largest


def _largest_weights(towers: list[Arch]) -> dict[str, torch.Tensor]:
    """Every weight of the largest towers under its supernet key, as `nas.models` initialises it; a weight two
    towers share (stem, Transformer attention, text) is taken from the first, whose shape holds every subnet's."""
    weights: dict[str, torch.Tensor] = {}
    for arch in towers:
        for key, tensor in build_vision_tower(arch).state_dict().items():
            weights.setdefault(supernet_key(arch, key), tensor)
    return weights


def _register(root: nn.Module, key: str, param: nn.Parameter) -> None:
    """Register `param` under its dotted `key`, making the modules on its path, so the state dict keys read as the
    towers' own."""
    *path, name = key.split(".")
    module = root
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    module.register_parameter(name, param)
