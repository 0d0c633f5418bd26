"""A trained workdir's parameter EMA, restored for inference: `load_ema(workdir, family)`.

Only the model of the workdir's family is built (as shapes, no optimizer), and only its EMA (and
its other variables, e.g. a VQ codebook) is read from the checkpoint, so inference needs none of
the training code and a model whose train state does not fit the devices can still be used.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

from dalle_jax.models.clip import Clip
from dalle_jax.models.dalle.transformer import DalleTransformer
from dalle_jax.models.dvae.model import DVAE
from dalle_jax.models.dvae.quantizers import CodebookVar
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import checkpoint, train_state

# family → (model class, the filter of its variables that are not parameters)
MODELS = {"dvae": (DVAE, CodebookVar), "dalle": (DalleTransformer, None), "clip": (Clip, None)}


def abstract_model_state(config: ml_collections.ConfigDict, mesh
                         ) -> tuple[train_state.StateSpec, dict]:
    """(spec, abstract state) of a config's model on `mesh`, as training shards it, with no
    optimizer: what `load_ema` restores into."""
    model, extra_filter = MODELS[config.model.family]
    return train_state.create(lambda: model.from_config(config.model, seed=config.train.seed),
                              optax.identity(), mesh, dict(config.partitioning.rules),
                              extra_filter=extra_filter, abstract=True)


def load_ema(workdir: str, family: str, *, mesh_axes: dict | None = None, step: int | None = None,
             in_compute_dtype: bool = False):
    """(config, spec, {'ema', 'extra'}, step) of the newest (or `step`) checkpoint of a `family`
    workdir ('dvae', 'dalle' or 'clip'), sharded over the mesh of `mesh_axes` (default
    {'data': -1}) by the config's rules; `in_compute_dtype` casts the EMA's floating-point
    leaves to the config's `model.dtype` as they are read (bfloat16 halves a sampler's memory).
    Errors name a workdir of another family or one without a checkpoint."""
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; one of {sorted(MODELS)}")
    config = checkpoint.load_config(workdir)
    if config.model.family != family:
        raise ValueError(f"{workdir} holds a {config.model.family!r} model, not a {family}")
    ckpt = checkpoint.Checkpointer(workdir, async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet: train it first")
        spec, abstract = abstract_model_state(config, make_mesh(mesh_axes or {"data": -1}))
        dtype = jnp.dtype(config.model.get("dtype", "float32"))
        if in_compute_dtype and dtype != jnp.float32:
            abstract = {**abstract, "ema": train_state.in_dtype(abstract["ema"], dtype)}
        state = ckpt.restore_inference(abstract, step)
    finally:
        ckpt.close()
    return config, spec, state, step
