"""Stand-in for torchvision.ops.misc (see the package docstring)."""

from torchvision._unavailable import unavailable

FrozenBatchNorm2d = unavailable("ops.misc.FrozenBatchNorm2d")
