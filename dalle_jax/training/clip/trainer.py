"""The reranker's training in the shared loop: `train_and_evaluate(config, workdir)`.

Reads (image, caption) batches of a prepared dataset, like stage 1, and trains `models.clip.Clip`
with the symmetric InfoNCE loss and AdamW (weight decay on matrices only); validation reports the
loss and in-batch retrieval accuracy (image → caption and caption → image, top-1) of the
parameter EMA. Where the dataset offers hard negatives (`data.hard_negatives`; on `shapes` object
scenes, one colour, shape, place or relation swapped in a caption, one shape or place changed in
an image), validation always reports how often an image prefers its caption to the negative
caption (`negative_accuracy`) and a caption its image to the negative image
(`negative_image_accuracy`); `train.hard_negatives` and `train.negative_images` train against
them too (changing only the kinds in `train.negative_kinds` and `train.negative_image_kinds`).
`training.loop` does the rest (checkpoints, resuming, metrics, SIGTERM).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dalle_jax.data import hard_negatives
from dalle_jax.data.pipeline import TOKENIZER_FILE
from dalle_jax.data.tokenizer import TextTokenizer
from dalle_jax.models.clip import Clip
from dalle_jax.parallel import hosts
from dalle_jax.parallel.mesh import batch_sharding
from dalle_jax.parallel.partitioning import activation_sharding, replicated
from dalle_jax.training import loop, optimizer, train_state
from dalle_jax.training.clip.loss import clip_loss

# Parameters that are not decayed: gains, biases, position embeddings, the temperature.
UNDECAYED = ("scale", "bias", "pos", "logit_scale")


# True for weight matrices and token embeddings, by parameter name.
decay_mask = optimizer.decay_mask(lambda name: not any(s in name for s in UNDECAYED))
# Linear warm-up to the peak, then cosine to `end_learning_rate` at `decay_steps`.
learning_rate = optimizer.warmup_cosine


def build(config: ml_collections.ConfigDict, mesh, *,
          abstract: bool = False) -> tuple[train_state.StateSpec, dict]:
    """(spec, freshly initialised state) for a CLIP config, on `mesh` (`abstract`: shapes and
    shardings only, see `train_state.create`)."""
    tx = optimizer.adamw(config.optimizer, learning_rate(config.optimizer), decay_mask)
    return train_state.create(lambda: Clip.from_config(config.model, seed=config.train.seed), tx,
                              mesh, dict(config.partitioning.rules), abstract=abstract)


def negatives_maker(config: ml_collections.ConfigDict, workdir: str,
                    negatives: hard_negatives.HardNegatives, kinds: tuple[str, ...] | None = None
                    ) -> Callable[[list[str]], np.ndarray]:
    """captions → (B, text_len) int32 ids of one hard negative each, with one of `kinds` (default:
    all the dataset offers) changed (padding where there is none), tokenized by the workdir's
    tokenizer."""
    tokenizer = TextTokenizer.load(os.path.join(workdir, TOKENIZER_FILE), config.text.text_len)
    kinds = kinds or negatives.caption_kinds
    return lambda captions: tokenizer.encode_batch(negatives.captions(captions, kinds))


def negative_images_maker(negatives: hard_negatives.HardNegatives,
                          kinds: tuple[str, ...] | None = None
                          ) -> Callable[[np.ndarray, list[str]], tuple[np.ndarray, np.ndarray]]:
    """(images, captions) → (negative images, has) with one of `kinds` (default: all the dataset
    offers) changed."""
    kinds = kinds or negatives.image_kinds
    return lambda images, captions: negatives.images(images, captions, kinds)


def _like(reference, rows: np.ndarray):
    """Host rows placed like the batch array `reference` (numpy stays numpy)."""
    if not isinstance(reference, jax.Array):
        return rows
    sharding = batch_sharding(reference.sharding.mesh, rows.ndim)
    return jax.make_array_from_process_local_data(sharding, rows,
                                                  (reference.shape[0],) + rows.shape[1:])


def training_kinds(config: ml_collections.ConfigDict, negatives: hard_negatives.HardNegatives,
                   option: str = "negative_kinds") -> tuple[str, ...]:
    """What the training negatives change: `train.negative_kinds` for captions, or
    `train.negative_image_kinds` for images (validation changes any kind)."""
    allowed = negatives.image_kinds if option == "negative_image_kinds" else negatives.caption_kinds
    try:
        return hard_negatives.parse_kinds(config.train.get(option, ",".join(allowed)), allowed)
    except ValueError as e:
        raise ValueError(f"train.{option}: {e}") from None


def _inputs(config, batch: dict, negatives: Callable | None = None,
            pictures: Callable | None = None) -> dict:
    """{'image', 'text'} of a loader batch (and 'negative_text' with `negatives`,
    'negative_images' and 'has_negative_image' with `pictures`), or a ValueError for a dataset of
    codes."""
    if "image" not in batch:
        raise ValueError(f"data.dataset={config.data.dataset!r} gives codes, not images; CLIP "
                         "trains on a prepared image dataset such as 'shapes'")
    out = {"image": batch["image"], "text": batch["text"]}
    captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in batch["caption"]]
    if negatives is not None:  # this process's rows of the global batch, placed alike
        out["negative_text"] = _like(batch["text"], negatives(captions))
    if pictures is not None:
        images, has = pictures(hosts.host_rows(batch["image"]), captions)
        out["negative_images"] = _like(batch["image"], images)
        out["has_negative_image"] = _like(batch["image"], has)
    return out


def _shardings(mesh, negatives: bool = False, pictures: bool = False):
    out = {"image": batch_sharding(mesh, 4), "text": batch_sharding(mesh, 2)}
    if negatives:
        out["negative_text"] = batch_sharding(mesh, 2)
    if pictures:
        out["negative_images"] = batch_sharding(mesh, 4)
        out["has_negative_image"] = batch_sharding(mesh, 1)
    return out


def _loss(spec, config, params, batch: dict):
    with activation_sharding(spec.mesh, config.partitioning.rules):
        return clip_loss(spec.merge(params, {}), batch["image"], batch["text"],
                         batch.get("negative_text"), batch.get("negative_images"),
                         batch.get("has_negative_image"))


def make_train_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict,
                    negatives: Callable | None = None, pictures: Callable | None = None):
    """`step(state, batch) → (state, metrics)`, jitted, state donated; with `negatives`
    (`negatives_maker`) the loss also ranks each image's caption above its hard negative caption,
    with `pictures` (`negative_images_maker`) each caption's image above its negative image."""
    schedule = learning_rate(config.optimizer)

    def step(state, batch):
        loss_fn = lambda params: _loss(spec, config, params, batch)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        new = train_state.apply_update(spec, state, grads, loss, config.optimizer.ema_decay)
        return new, dict(aux, loss=loss, finite=jnp.isfinite(loss).astype(jnp.float32),
                         grad_norm=optax.global_norm(grads),
                         learning_rate=schedule(state["step"]))

    shardings = _shardings(spec.mesh, bool(negatives), bool(pictures))
    jitted = jax.jit(step, in_shardings=(spec.shardings, shardings),
                     out_shardings=(spec.shardings, replicated(spec.mesh)), donate_argnums=0)

    def run(state, batch):
        return jitted(state, _inputs(config, batch, negatives, pictures))
    run.jitted = jitted  # the compiled step alone, on the batch `_inputs` makes (`bench compile`)
    return run


def make_eval_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict,
                   negatives: bool = False):
    """`eval(params, batch) → metrics` of one batch (`negative_accuracy` and
    `negative_image_accuracy` too with `negatives`, whose batches carry both kinds). The loss is
    the plain symmetric InfoNCE either way, so runs with and without hard negatives compare."""
    def run(params, batch):
        _, aux = _loss(spec, config, params, batch)
        return dict(aux, loss=aux["in_batch_loss"])

    shardings = _shardings(spec.mesh, negatives, negatives)
    return jax.jit(run, in_shardings=(spec.shardings["ema"], shardings),
                   out_shardings=replicated(spec.mesh))


def evaluate(eval_step, params, batches: Iterator[dict], num_batches: int, config,
             negatives: Callable | None = None, pictures: Callable | None = None) -> dict:
    """Mean validation metrics over up to `num_batches` batches (retrieval within each batch)."""
    return loop.mean_over_batches(
        lambda b: eval_step(params, _inputs(config, b, negatives, pictures)), batches, num_batches)


def task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
    """The CLIP pieces of the shared training loop (the workdir holds the tokenizer that the hard
    negatives are written with)."""
    offered = hard_negatives.for_data(config.data)
    compiled = {}

    def negatives(kinds=None):
        if kinds not in compiled:  # the loop writes the tokenizer before it builds steps
            compiled[kinds] = (negatives_maker(config, workdir, offered, kinds) if offered
                               else None)
        return compiled[kinds]

    pictures = negative_images_maker(offered) if offered else None

    def train_step(spec):
        train = config.train
        return make_train_step(
            spec, config,
            negatives(training_kinds(config, offered)) if train.get("hard_negatives") else None,
            negative_images_maker(offered, training_kinds(config, offered, "negative_image_kinds"))
            if train.get("negative_images") else None)

    def run_eval(spec, state, batches):
        if "eval" not in compiled:
            compiled["eval"] = make_eval_step(spec, config, negatives() is not None)
        return evaluate(compiled["eval"], state["ema"], batches, config.train.eval_batches, config,
                        negatives(), pictures)

    return loop.Task(name="clip", build=lambda mesh: build(config, mesh), train_step=train_step,
                     evaluate=run_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    m = config.model
    if (config.text.text_len, config.data.resolution) != (m.text_len, m.resolution):
        raise ValueError(f"text.text_len={config.text.text_len} and data.resolution="
                         f"{config.data.resolution} must equal model.text_len={m.text_len} and "
                         f"model.resolution={m.resolution}")
    if config.text.vocab_size > m.text_vocab:
        raise ValueError(f"text.vocab_size={config.text.vocab_size} exceeds model.text_vocab="
                         f"{m.text_vocab}")
    offered = hard_negatives.for_data(config.data)
    for option in ("hard_negatives", "negative_images"):
        if config.train.get(option) and offered is None:
            raise ValueError(f"train.{option}=True needs a dataset with hard negatives (one of "
                             f"{sorted(hard_negatives.PROVIDERS)}, with attributes to swap); got "
                             f"data.dataset={config.data.dataset!r}")
    if offered:  # a bad train.negative_kinds fails before any work
        training_kinds(config, offered)
        training_kinds(config, offered, "negative_image_kinds")
    return loop.run(config, workdir, task(config, workdir))
