"""A trained dVAE workdir for inference: `encode(images) → codes`, `decode(codes) → images`.

    dvae = TrainedDVAE.load("workdirs/dvae_shapes")
    codes = dvae.encode(images_uint8)     # (B, g, g) int32, argmax codes, no gumbel noise
    images = dvae.decode(codes)           # (B, fg, fg, 3) float in [0, 1]

Both are jitted once per batch shape and run batch-sharded over the mesh (a batch that does not
divide over the batch shards is padded and trimmed). The parameter EMA is what gets used. In a
multi-host run every process calls them with the same batch and gets all of the result; or
`on_this_host()` gives a copy on this process's devices alone, for hosts that each encode their
own images with no collective between them (`data encode`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.parallel.mesh import batch_sharding, make_mesh, num_batch_shards
from dalle_jax.parallel.partitioning import replicated
from dalle_jax.generation.restore import load_ema
from dalle_jax.training import train_state


class TrainedDVAE:
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

    def _sharded(self, x: np.ndarray) -> tuple[jax.Array, int]:
        n = len(x)
        shards = num_batch_shards(self.mesh)
        pad = (-n) % shards
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return jax.device_put(x, batch_sharding(self.mesh, x.ndim)), n

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, 3), H and W multiples of f = `grid_scale` → int32 codes
        (B, H/f, W/f)."""
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3), got {images_uint8.shape}")
        x, n = self._sharded(images_uint8)
        return np.asarray(self._encode(self.model, x))[:n]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int codes (B, g, g) → float images in [0, 1] (B, fg, fg, 3), f = `grid_scale`."""
        codes = np.asarray(codes)
        vocab = self.model.vocab_size
        if codes.ndim != 3:
            raise ValueError(f"codes must be (B, g, g), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= vocab):
            raise ValueError(f"codes must lie in [0, {vocab}), got [{codes.min()}, {codes.max()}]")
        c, n = self._sharded(codes.astype(np.int32))
        return np.asarray(self._decode(self.model, c))[:n]
