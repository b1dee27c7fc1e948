"""Build an `Arch` as a PyTorch image tower and as an open_clip CLIP model.

The tower's trunk is a timm model: a `VisionTransformer` whose patch embedding is, for hybrids, a
`HybridEmbed` around this module's `ConvStages`, exactly as timm builds ViTamin; or timm's `ConvNeXt` or
`MaxxVit` (CoAtNet) for towers without a Transformer stage. Then open_clip's head (dropout and a bias-free
projection). Module names follow timm and open_clip, so a ViTamin, ConvNeXt or CoAtNet preset loads timm's
`vitamin_*` / `convnext_*` / `coatnet_*` state dict into `tower.trunk`, and a ViTamin preset open_clip's
`ViTamin-*` state dict into `build_clip`'s model, all strictly.
"""

from nas.models.tower import ConvStages, VisionTower, build_clip, build_vision_tower

__all__ = ["ConvStages", "VisionTower", "build_clip", "build_vision_tower"]
