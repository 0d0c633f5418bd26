"""The training loop every stage shares: `run(config, workdir, task)`.

Prepares the data, gets the workdir's tokenizer, saves the config, builds the state straight onto
the mesh or restores the newest checkpoint (state and data iterator), then steps with a progress
bar: train metrics (with `steps_per_s`, the training steps per second since the last log,
evaluation or save) every `log_every`, validation (`task.evaluate`) every `eval_every`, images
(`task.images`) every `image_every`, checkpoints every `checkpoint_every` and at the end. A
non-finite loss stops the run naming the step, or (`on_nonfinite='skip'`) is skipped and counted;
each step's flag is read one step late, so the host never waits between steps. SIGTERM (a TPU
preemption) to any host saves a checkpoint on every host at the same step and returns.
Re-running resumes.

Every host of a multi-host run runs this same loop: the first process prepares the data and
trains the tokenizer while the others wait and then read them (`parallel.hosts`), it alone
writes the config, metrics and images, and each host's data iterator position is saved as its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Iterator

import jax
import ml_collections
from tqdm.auto import tqdm

from dalle_jax.data import pipeline
from dalle_jax.parallel import hosts
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import checkpoint, train_state
from dalle_jax.training.host_memory import release_freed_memory
from dalle_jax.training.metrics import MetricWriter


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class FinitenessCheck:
    """Reads each step's `finite` flag one step late: reading it blocks the host until the step is
    computed, so the check of step N waits until step N + 1 is dispatched and the host is not idle
    between steps. `settle` reads the pending flag at once (before logging, evaluating or saving).
    A non-finite loss raises `NonFiniteLoss` naming its step (`on_nonfinite='stop'`) or is counted
    in `skipped` ('skip'; the step left the state as it was)."""

    def __init__(self, on_nonfinite: str):
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.on_nonfinite={on_nonfinite!r}; choose 'stop' or 'skip'")
        self.stop = on_nonfinite == "stop"
        self.skipped = 0
        self._pending = None

    def push(self, step: int, metrics: dict) -> None:
        """Settles the previous step, then holds this one's flag."""
        self.settle()
        self._pending = (step, metrics["finite"])

    def settle(self) -> None:
        """Reads the held flag, if any."""
        if self._pending is None:
            return
        step, finite = self._pending
        self._pending = None
        if not float(finite):
            if self.stop:
                raise NonFiniteLoss(f"non-finite training loss at step {step}; stopping without "
                                    "saving it (train.on_nonfinite='skip' skips such updates "
                                    "instead)")
            self.skipped += 1


@dataclasses.dataclass
class Task:
    """What a stage plugs into the loop.

    build(mesh) → (spec, fresh state); train_step(spec) → step(state, batch) → (state, metrics)
    with `loss` and `finite` among the metrics; evaluate(spec, state, batches) → dict;
    images(spec, state, batch, folder, step) writes PNGs into `folder` (optional; called on every
    process, as it computes on the global arrays, and writes on the first one only).
    """

    name: str
    build: Callable
    train_step: Callable
    evaluate: Callable[..., dict]
    images: Callable | None = None


def restore_or_init(task: Task, workdir: str, mesh, ckpt: checkpoint.Checkpointer | None = None):
    """(spec, state, data_state or None): the newest checkpoint of `workdir`, else a new state."""
    spec, state = task.build(mesh)
    ckpt = ckpt or checkpoint.Checkpointer(workdir, async_save=False)
    if ckpt.latest_step() is None:
        return spec, state, None
    restored, data_state = ckpt.restore(train_state.abstract_state(spec, state))
    return spec, restored, data_state


def mean_over_batches(fn: Callable[[dict], dict], batches: Iterator[dict],
                      num_batches: int) -> dict[str, float]:
    """The mean of fn(batch)'s metrics over up to `num_batches` batches."""
    sums, n = None, 0
    for _, batch in zip(range(num_batches), batches):
        out = fn(batch)
        sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
        n += 1
    if sums is None:
        raise ValueError("the evaluation split gave no batch")
    return {k: float(v) / n for k, v in jax.device_get(sums).items()}


def eval_batches(config, tokenizer, mesh, prepared) -> Iterator[dict]:
    """One pass over the eval split, in order."""
    return pipeline.make_loader(config, config.data.eval_split, tokenizer, mesh=mesh,
                                prepared=prepared, num_epochs=1, shuffle=False)


def run(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    t = config.train
    finiteness = FinitenessCheck(t.on_nonfinite)
    mesh = make_mesh(dict(config.mesh))
    prepared = hosts.primary_first("preparing the data",
                                   lambda: pipeline.prepare_data(config.data))
    tokenizer = hosts.primary_first("training the tokenizer",
                                    lambda: pipeline.ensure_tokenizer(config, workdir, prepared))
    primary = hosts.is_primary()  # the one process that writes the config, metrics, images
    if primary:
        checkpoint.save_config(config, workdir)
    ckpt = checkpoint.Checkpointer(workdir, keep=t.keep_checkpoints, async_save=t.async_checkpoints)
    spec, state, data_state = restore_or_init(task, workdir, mesh, ckpt)
    start = int(state["step"])
    loader = pipeline.make_loader(config, config.data.train_split, tokenizer, mesh=mesh,
                                  prepared=prepared,
                                  bpe_dropout=config.text.get("bpe_dropout", 0.0),
                                  caption_dropout=config.text.get("caption_dropout", 0.0),
                                  cache=config.data.get("cache", False))
    if data_state is not None:
        loader.set_state(data_state)
    writer = MetricWriter(workdir, tensorboard=t.tensorboard, resume_step=start if start else None,
                          active=primary)
    step_fn = task.train_step(spec)
    last_eval: dict = {}
    logging.info("training %s from step %d to %d in %s", task.name, start, t.num_steps, workdir)
    try:
        with hosts.StopVote() as vote, tqdm(
                total=t.num_steps, initial=start, desc=task.name, unit="step",
                disable=None if primary else True, dynamic_ncols=True) as bar:
            for step in range(start + 1, t.num_steps + 1):
                batch = next(loader)
                state, metrics = step_fn(state, batch)
                if step == start + 1:
                    release_freed_memory()  # what compiling the step left behind
                    clock = (step, time.perf_counter())  # throughput counts from here
                finiteness.push(step, metrics)
                bar.update(1)
                last = step == t.num_steps
                log = step % t.log_every == 0 or last
                evaluate = step % t.eval_every == 0 or last
                images = bool(task.images and t.image_every
                              and (step % t.image_every == 0 or last))
                signalled = vote.should_stop(step)
                save = step % t.checkpoint_every == 0 or last or signalled
                boundary = log or evaluate or images or save
                if boundary:
                    finiteness.settle()  # nothing non-finite is logged, evaluated or saved unseen
                if log:
                    values = jax.device_get(metrics)
                    values["skipped_updates"] = finiteness.skipped
                    if step > clock[0]:  # training steps per second since the last mark
                        values["steps_per_s"] = (step - clock[0]) / (time.perf_counter() - clock[1])
                    record = writer.write(step, "train", values)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                if evaluate:
                    last_eval = task.evaluate(spec, state,
                                              eval_batches(config, tokenizer, mesh, prepared))
                    writer.write(step, "eval", last_eval)
                if images:
                    task.images(spec, state, batch, os.path.join(workdir, "images"), step)
                if save:
                    ckpt.save(step, state, loader.get_state(), force=True)
                if boundary:
                    clock = (step, time.perf_counter())  # evaluation and saving are not steps
                if signalled:
                    logging.warning("SIGTERM: saved step %d, exiting", step)
                    break
    finally:
        ckpt.close()
        writer.close()
        loader.close()
    return last_eval
