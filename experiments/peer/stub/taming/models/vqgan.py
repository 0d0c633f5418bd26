"""The two names dalle_pytorch/vae.py imports; building either is an error."""


def _refuse(cls_name):
    raise NotImplementedError(
        f"taming.models.vqgan.{cls_name} is a stand-in from experiments/peer/stub: install "
        "taming-transformers to use dalle_pytorch's VQGanVAE")


class VQModel:
    def __init__(self, *args, **kwargs):
        _refuse(type(self).__name__)


class GumbelVQ(VQModel):
    pass
