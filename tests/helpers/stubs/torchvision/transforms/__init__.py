"""Stand-in for torchvision.transforms (see the package docstring)."""

import enum

from torchvision._unavailable import unavailable


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


for _name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop",
              "ColorJitter", "Grayscale"):
    globals()[_name] = unavailable(f"transforms.{_name}")
