"""A stand-in for torchvision, so that `import open_clip` works beside CPU torch in the tests.

open_clip imports torchvision's transforms and `FrozenBatchNorm2d` when it is imported, but its
CLIP models never call them. PyPI's torchvision wheels are built against the CUDA torch and do not
load beside the CPU build the tests install. `tests/models/test_openclip.py` puts this folder's
parent on `sys.path` only when no working torchvision is installed; every name here raises if it
is used, so a test that came to need the real one would fail, not pass on a stand-in.
"""
