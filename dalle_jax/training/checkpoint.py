"""orbax checkpoints of a run: the train state (sharded arrays) and the data iterator position.

`workdir/checkpoints/<step>/{state, data}`; keeps the newest `keep` (async writes, atomic
renames). The resolved config is written beside them as `workdir/config.json`, and the workdir's
`tokenizer.json` completes what sampling and evaluation need.
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


class Checkpointer:
    """Saves and restores `(state, data_state)` under `workdir/checkpoints`."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save),
        )

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: dict | None = None, *, force: bool = False) -> None:
        """Starts writing step `step` (returns before the write ends when async)."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: dict, step: int | None = None, *,
                with_data: bool = True) -> tuple[dict, dict | None]:
        """(state placed on the shardings of `abstract_state`, data state or None)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        have_data = with_data and os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if have_data:
            items["data"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"], restored["data"] if have_data else None

    def restore_inference(self, abstract: dict, step: int) -> dict:
        """Only `{'ema': …, 'extra': …}` of step `step`'s train state, on the shardings and in the
        dtypes of `abstract` (ShapeDtypeStructs): what inference needs. The parameters and the
        optimizer's moments are never read, so a model whose train state does not fit the
        devices can still be sampled (a 12B model's EMA in bfloat16 is 25 GB of a 197 GB
        state)."""
        target = {k: abstract[k] for k in ("ema", "extra")}
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True)))
        logging.info("restored the EMA of step %d from %s", step, self.directory)
        return {k: restored["state"].get(k, {}) or {} for k in ("ema", "extra")}

    def wait(self) -> None:
        """Blocks until pending async writes are done."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finishes writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config as JSON into the workdir."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with; a clear error if there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: is it a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir: str, family: str, build, *, mesh_axes: dict | None = None,
                 step: int | None = None, in_compute_dtype: bool = False):
    """(config, spec, {'ema', 'extra'}, step) of the newest (or `step`) checkpoint of a `family`
    workdir, for inference: only the parameter EMA (and the model's other variables, e.g. a VQ
    codebook) is read, sharded over the mesh as in training; `in_compute_dtype` casts the EMA's
    floating-point leaves to the config's `model.dtype` as they are read (bfloat16 halves a
    sampler's memory). Nothing else of the train state is built or read.

    `build(config, mesh, abstract=True) → (spec, abstract state)` is the family's builder; errors
    name a workdir of another family or one without a checkpoint.
    """
    import jax.numpy as jnp

    from dalle_jax.parallel.mesh import make_mesh
    from dalle_jax.training import train_state

    config = load_config(workdir)
    if config.model.family != family:
        raise ValueError(f"{workdir} holds a {config.model.family!r} model, not a {family}")
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet: train it first")
        spec, abstract = build(config, make_mesh(mesh_axes or {"data": -1}), abstract=True)
        dtype = jnp.dtype(config.model.get("dtype", "float32"))
        if in_compute_dtype and dtype != jnp.float32:
            abstract = {**abstract, "ema": train_state.in_dtype(abstract["ema"], dtype)}
        state = ckpt.restore_inference(abstract, step)
    finally:
        ckpt.close()
    return config, spec, state, step
