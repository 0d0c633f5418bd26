"""The stage-1 training loop: `train_and_evaluate(config, workdir)`.

Prepares the data, builds the model straight onto the mesh, restores the newest checkpoint (state
and data iterator) if the workdir has one, then steps with a progress bar, logging train metrics,
validation metrics of the parameter EMA, reconstruction grids and checkpoints as the config says.
SIGTERM (a TPU preemption) saves a checkpoint and returns.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from dalle_jax import visualize
from dalle_jax.data import pipeline
from dalle_jax.models.image_tokenizer import ImageTokenizer
from dalle_jax.models.quantizers import CodebookVar
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import checkpoint, dvae_steps, train_state
from dalle_jax.training.metrics import MetricWriter
from dalle_jax.training.schedules import dvae_schedules


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def build(config: ml_collections.ConfigDict, mesh) -> tuple[train_state.StateSpec, dict]:
    """(spec, freshly initialised state) for a stage-1 config, on `mesh`."""
    schedules = dvae_schedules(config)
    tx = train_state.adamw(config.optimizer, schedules["learning_rate"])
    return train_state.create(
        lambda: ImageTokenizer.from_config(config.model, seed=config.train.seed), tx, mesh,
        dict(config.partitioning.rules), extra_filter=CodebookVar,
    )


def restore_or_init(config, workdir, mesh, ckpt: checkpoint.Checkpointer | None = None):
    """(spec, state, data_state or None): the newest checkpoint of `workdir`, else a new state."""
    spec, state = build(config, mesh)
    ckpt = ckpt or checkpoint.Checkpointer(workdir, async_save=False)
    if ckpt.latest_step() is None:
        return spec, state, None
    restored, data_state = ckpt.restore(train_state.abstract_state(spec, state))
    return spec, restored, data_state


def evaluate(spec, state, eval_step, batches: Iterator[dict], num_batches: int) -> dict:
    """Validation metrics of the EMA parameters over up to `num_batches` batches."""
    sums = None
    for _, batch in zip(range(num_batches), batches):
        out = eval_step(state["ema"], state["extra"], batch["image"])
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
        raise ValueError("the evaluation split gave no batch")
    return dvae_steps.summarize(jax.device_get(sums))


def reconstruction_grid(spec, state, images: np.ndarray, path: str, step: int) -> str:
    """PNG of originals (top rows) beside their EMA reconstructions (bottom rows)."""
    model = spec.merge(state["ema"], state["extra"])
    x = jnp.asarray(images[:8], jnp.float32) / 255.0
    recon = np.asarray(jax.jit(lambda m, x: m.decode(m.encode(x)))(model, x))
    both = np.concatenate([np.asarray(images[:8]), (recon * 255).round().astype(np.uint8)])
    labels = ["original"] * len(x) + ["reconstruction"] * len(x)
    return visualize.save_grid(both, labels, path, columns=len(x), title=f"step {step}")


def _eval_loader(config, tokenizer, mesh, prepared):
    return pipeline.make_loader(config, config.data.eval_split, tokenizer, mesh=mesh,
                                prepared=prepared, num_epochs=1, shuffle=False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    t = config.train
    if t.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"train.on_nonfinite={t.on_nonfinite!r}; choose 'stop' or 'skip'")
    mesh = make_mesh(dict(config.mesh))
    prepared = pipeline.prepare_data(config.data)
    tokenizer = pipeline.ensure_tokenizer(config, workdir, prepared)
    checkpoint.save_config(config, workdir)
    ckpt = checkpoint.Checkpointer(workdir, keep=t.keep_checkpoints, async_save=t.async_checkpoints)
    spec, state, data_state = restore_or_init(config, workdir, mesh, ckpt)
    start = int(state["step"])
    loader = pipeline.make_loader(config, config.data.train_split, tokenizer, mesh=mesh,
                                  prepared=prepared)
    if data_state is not None:
        loader.set_state(data_state)
    writer = MetricWriter(workdir, tensorboard=t.tensorboard, resume_step=start if start else None)
    train_step = dvae_steps.make_train_step(spec, config, dvae_schedules(config))
    eval_step = dvae_steps.make_eval_step(spec, config.model.vocab_size)
    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda sig, _: stop.update(signal=sig))
    last_eval: dict = {}
    skipped = 0
    logging.info("training %s from step %d to %d in %s", config.model.quantizer, start, t.num_steps, workdir)
    try:
        with tqdm(total=t.num_steps, initial=start, desc="dvae", unit="step",
                  disable=None, dynamic_ncols=True) as bar:
            for step in range(start + 1, t.num_steps + 1):
                batch = next(loader)
                state, metrics = train_step(state, batch["image"])
                if not float(metrics["finite"]):
                    if t.on_nonfinite == "stop":
                        raise NonFiniteLoss(f"non-finite training loss at step {step}; the state "
                                            f"of step {step - 1} is kept (train.on_nonfinite='skip' "
                                            "skips such updates instead)")
                    skipped += 1
                bar.update(1)
                if step % t.log_every == 0 or step == t.num_steps:
                    values = jax.device_get(metrics)
                    values["skipped_updates"] = skipped
                    record = writer.write(step, "train", values)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", mse=f"{record['mse']:.4f}")
                if step % t.eval_every == 0 or step == t.num_steps:
                    last_eval = evaluate(spec, state, eval_step,
                                         _eval_loader(config, tokenizer, mesh, prepared), t.eval_batches)
                    writer.write(step, "eval", last_eval)
                if t.image_every and (step % t.image_every == 0 or step == t.num_steps):
                    reconstruction_grid(spec, state, np.asarray(jax.device_get(batch["image"])),
                                        os.path.join(workdir, "images", f"recon_{step:07d}.png"), step)
                if step % t.checkpoint_every == 0 or step == t.num_steps or stop["signal"]:
                    ckpt.save(step, state, loader.get_state(), force=True)
                if stop["signal"]:
                    logging.warning("SIGTERM: saved step %d, exiting", step)
                    break
    finally:
        signal.signal(signal.SIGTERM, previous)
        ckpt.close()
        writer.close()
        loader.close()
    return last_eval
