"""taming's VQGAN as an image tokenizer: `TrainedVQGAN`, with `TrainedDVAE`'s interface.

    vqgan = TrainedVQGAN.load("weights/vqgan-f16-16384")  # or "f16-16384:last.ckpt" (torch)
    codes = vqgan.encode(images_uint8)    # (B, H/16, W/16) int32, the nearest codebook entries
    images = vqgan.decode(codes)          # (B, H, W, 3) float in [0, 1]

Pixels go in as x / 127.5 − 1 (taming's range) and come out as (clip(y, −1, 1) + 1) / 2. The
parameters, read with numpy from a converted directory (`python -m dalle_jax.models.vqgan.convert`),
are whole on every device of the mesh and the batch is split over it (`codec.ImageCodec`).
`load_codec("vqgan:…")` builds one from the reference `data encode` writes beside its codes.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dalle_jax.generation.codec import VQGAN, ImageCodec
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.parallel.partitioning import replicated
from dalle_jax.storage import absolute


class TrainedVQGAN(ImageCodec):
    """A `models.vqgan.VQGAN` on a mesh; `reference` is what `load_codec` reads it back from."""

    step = 0  # not trained here: the codes' dataset is named by `label`

    def __init__(self, model, *, reference: str = "", mesh=None):
        self.mesh = make_mesh({"data": -1}) if mesh is None else mesh
        graphdef, state = nnx.split(model)
        state = jax.device_put(jax.tree.map(np.asarray, state), replicated(self.mesh))
        self.model = nnx.merge(graphdef, state)
        c = model.config
        self.vocab_size, self.grid_scale, self.resolution = c.n_embed, c.factor, c.resolution
        self.image_key, self.caption_key = "image", "caption"
        self.reference = reference
        self.label = "vqgan"
        whole = replicated(self.mesh)  # every process reads all of the result
        self._encode = jax.jit(lambda m, x: m.encode(x.astype(jnp.float32) / 127.5 - 1.0),
                               out_shardings=whole)
        self._decode = jax.jit(lambda m, c: (jnp.clip(m.decode(c), -1.0, 1.0) + 1.0) / 2.0,
                               out_shardings=whole)

    @classmethod
    def load(cls, spec: str, *, mesh_axes: dict | None = None) -> "TrainedVQGAN":
        """`DIR` (converted) or `PRESET:CKPT` (a taming checkpoint; needs torch). Errors name a
        path that is not there or an unknown preset."""
        from dalle_jax.models.vqgan import convert
        from dalle_jax.models.vqgan.model import PRESETS

        mesh = make_mesh(mesh_axes or {"data": -1})
        if os.path.isdir(spec):
            return cls(convert.load(spec), reference=VQGAN + absolute(spec), mesh=mesh)
        preset, sep, weights = spec.partition(":")
        if not sep or not os.path.isfile(weights):
            raise FileNotFoundError(f"{VQGAN}{spec}: give a converted directory or PRESET:PATH of "
                                    "a taming checkpoint that exists")
        if preset not in PRESETS:
            raise ValueError(f"{VQGAN}{spec}: unknown preset {preset!r}; one of {sorted(PRESETS)}")
        model = convert.from_state_dict(preset, convert.read_weights(weights))
        return cls(model, reference=f"{VQGAN}{preset}:{absolute(weights)}", mesh=mesh)

    def on_this_host(self) -> "TrainedVQGAN":
        """This model on this process's devices only: its calls issue no collective, so every
        host can encode a different batch. Itself in a one-process run."""
        if jax.process_count() == 1:
            return self
        return TrainedVQGAN(self.model, reference=self.reference,
                            mesh=make_mesh({"data": -1}, jax.local_devices()))
