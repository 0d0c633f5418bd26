"""Import stand-in for taming-transformers, used by experiments/peer/bench.py.

dalle_pytorch 1.6.6 imports `VQModel` and `GumbelVQ` from `taming.models.vqgan` when it is imported,
for its VQGanVAE. The real package needs pytorch-lightning and torchvision; the benchmark never
builds a VQGanVAE, so only the two names have to exist (see taming/models/vqgan.py).
"""
