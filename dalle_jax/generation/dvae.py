"""A trained dVAE workdir for inference: `encode(images) → codes`, `decode(codes) → images`.

    dvae = TrainedDVAE.load("workdirs/dvae_shapes")
    codes = dvae.encode(images_uint8)     # (B, g, g) int32, argmax codes, no gumbel noise
    images = dvae.decode(codes)           # (B, fg, fg, 3) float in [0, 1]

Both are jitted once per batch shape and run batch-sharded over the mesh (`codec.ImageCodec`).
The parameter EMA is what gets used. In a multi-host run every process calls them with the same
batch and gets all of the result; or `on_this_host()` gives a copy on this process's devices
alone, for hosts that each encode their own images with no collective between them
(`data encode`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.generation.codec import ImageCodec
from dalle_jax.generation.restore import load_ema
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.parallel.partitioning import replicated
from dalle_jax.storage import absolute
from dalle_jax.training import train_state


class TrainedDVAE(ImageCodec):
    """Encoder and decoder of a restored stage-1 model on a mesh; `config` and `workdir` are
    the run's (None for a model that did not come from a workdir)."""

    def __init__(self, spec: train_state.StateSpec, state: dict, *, step: int, mesh=None,
                 config=None, workdir: str | None = None):
        self.spec, self.config, self.workdir = spec, config, workdir
        self.mesh = spec.mesh if mesh is None else mesh
        self.step = step
        self.model = spec.merge(state["ema"], state["extra"])
        self.model_state = {"ema": state["ema"], "extra": state["extra"]}
        self.grid_scale = 2 ** self.model.encoder.downsample  # image side ÷ code grid side
        self.vocab_size = self.model.vocab_size
        self.reference = absolute(workdir) if workdir else ""
        self.label = f"step{step}"
        data = config.data if config is not None else {}  # what `data encode` reads by default
        self.resolution = data.get("resolution")
        self.image_key = data.get("image_key", "image")
        self.caption_key = data.get("caption_key", "caption")
        whole = replicated(self.mesh)  # every process reads all of the result
        self._encode = jax.jit(lambda m, x: m.encode(x.astype(jnp.float32) / 255.0),
                               out_shardings=whole)
        self._decode = jax.jit(lambda m, c: m.decode(c), out_shardings=whole)

    @classmethod
    def load(cls, workdir: str, *, mesh_axes: dict | None = None,
             step: int | None = None) -> "TrainedDVAE":
        """Restores the newest (or `step`) checkpoint of a stage-1 workdir."""
        config, spec, state, step = load_ema(workdir, "dvae", mesh_axes=mesh_axes, step=step)
        return cls(spec, state, step=step, config=config, workdir=workdir)

    def on_this_host(self) -> "TrainedDVAE":
        """This model on this process's devices only (batch-sharded over them, parameters whole
        on each): its calls issue no collective, so every host can encode a different batch.
        Itself in a one-process run."""
        if jax.process_count() == 1:
            return self
        whole = jax.jit(lambda s: s, out_shardings=replicated(self.mesh))(self.model_state)
        local = make_mesh({"data": -1}, jax.local_devices())
        state = jax.tree.map(lambda x: jax.device_put(np.asarray(x.addressable_data(0)),
                                                      replicated(local)), whole)
        return TrainedDVAE(self.spec, state, step=self.step, mesh=local, config=self.config,
                          workdir=self.workdir)
