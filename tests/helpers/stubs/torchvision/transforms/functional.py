"""Stand-in for torchvision.transforms.functional (see the package docstring)."""
