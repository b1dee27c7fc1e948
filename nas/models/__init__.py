"""Build an `Arch` as a PyTorch image tower and as an open_clip CLIP model.

The tower is a timm `VisionTransformer` (the trunk) whose patch embedding is, for hybrids, a `HybridEmbed`
around this module's `ConvStages`, exactly as timm builds ViTamin; then open_clip's head (dropout and a
bias-free projection). Module names follow timm and open_clip, so a ViTamin preset loads timm's
`vitamin_*` state dict into `tower.trunk` and open_clip's `ViTamin-*` state dict into `build_clip`'s model,
both strictly.
"""

from nas.models.tower import ConvStages, VisionTower, build_clip, build_vision_tower

__all__ = ["ConvStages", "VisionTower", "build_clip", "build_vision_tower"]
