"""Jitted stage-1 steps: a train step (loss, AdamW, parameter EMA, VQ codebook EMA, code restarts),
a decoder-only step for the optional last phase, and an eval step.

Both take and return sharded global arrays: the state on the shardings of `StateSpec`, images split
over the mesh's batch axes. The train state is donated. A non-finite loss leaves the state as it
was and says so in the metrics (`finite` = 0), so the loop can stop or count it.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dalle_jax.models.dvae import pixels
from dalle_jax.models.dvae.model import DISTANCE_LOGITS
from dalle_jax.models.dvae.quantizers import ema_update as codebook_ema, kl_to_uniform, restart_draws
from dalle_jax.parallel.mesh import batch_sharding
from dalle_jax.parallel.partitioning import replicated
from dalle_jax.training import train_state
from dalle_jax.training.dvae.loss import bits_per_dim, code_stats, dvae_loss, usage_stats


def likelihood_of(model_config: ml_collections.ConfigDict) -> tuple[str, float]:
    """(likelihood, σ) of a model config, checked; configs older than the option are the paper's."""
    likelihood = model_config.get("likelihood", "logit_laplace")
    sigma = model_config.get("sigma", 0.1)
    if likelihood not in pixels.LIKELIHOODS:
        raise ValueError(f"model.likelihood={likelihood!r}; choose one of {pixels.LIKELIHOODS}")
    if not sigma > 0:
        raise ValueError(f"model.sigma must be positive, got {sigma}")
    return likelihood, float(sigma)


# The six orders of an image's colour channels.
CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))


def permute_channels(images: jax.Array, rng: jax.Array) -> jax.Array:
    """Each image of (B, H, W, 3) with its channels in one of `CHANNEL_ORDERS`, drawn from `rng`
    per image."""
    orders = jnp.asarray(CHANNEL_ORDERS)[jax.random.randint(rng, (images.shape[0],), 0,
                                                             len(CHANNEL_ORDERS))]
    return jnp.take_along_axis(images, orders[:, None, None, :], axis=-1)


def make_train_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict,
                    schedules: dict[str, optax.Schedule]):
    """`step(state, images_uint8) → (state, metrics)`, jitted with explicit shardings."""
    base_key = jax.random.key(config.train.seed)
    vq = config.model.quantizer == "vq"
    likelihood, sigma = likelihood_of(config.model)
    if not config.kl.get("marginal_temperature", 1.0) > 0:
        raise ValueError(f"kl.marginal_temperature must be positive, "
                         f"got {config.kl.marginal_temperature}")
    permute = config.get("augment", {}).get("permute_channels", False)
    restart_below = config.gumbel.get("restart_below", 0.0)
    gumbel_restarts = not vq and restart_below > 0
    if gumbel_restarts:
        logits = config.model.get("gumbel_logits", "conv")
        if logits not in DISTANCE_LOGITS:
            raise ValueError(f"gumbel.restart_below={restart_below} needs a codebook to restart: "
                             f"model.gumbel_logits 'distance' or 'tied', not {logits!r}")
    for section, used in (("vq", vq), ("gumbel", gumbel_restarts)):
        if used and config[section].restart_from not in ("random", "error"):
            raise ValueError(f"{section}.restart_from={config[section].restart_from!r}; "
                             "choose 'random' or 'error'")

    def step(state, images):
        t = state["step"]
        rng, restart_rng = jax.random.split(jax.random.fold_in(base_key, t))
        temperature, beta = schedules["temperature"](t), schedules["beta"](t)
        noise_scale = schedules["noise_scale"](t)
        if permute:  # another stream than `rng`'s, so runs without it draw the same noise
            images = permute_channels(images, jax.random.fold_in(restart_rng, 1))

        def loss_fn(params):
            model = spec.merge(params, state["extra"])
            return dvae_loss(model, images, rng, temperature=temperature, beta=beta,
                             straight_through=config.gumbel.straight_through,
                             reinmax=config.gumbel.get("reinmax", False),
                             noise_scale=noise_scale,
                             commitment=config.vq.commitment,
                             likelihood=likelihood, sigma=sigma,
                             marginal_beta=config.kl.marginal_beta,
                             marginal_temperature=config.kl.marginal_temperature)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        metrics = {k: v for k, v in aux.items() if k not in ("z", "codes", "errors")}
        extra = None
        if vq:
            cb = state["extra"]["codebook"]
            errors = aux["errors"] if config.vq.restart_from == "error" else None
            counts, sums, codebook, dead = codebook_ema(
                cb["counts"], cb["sums"], aux["z"], aux["codes"], restart_rng,
                decay=config.vq.ema_decay, eps=config.vq.ema_eps,
                restart_below=config.vq.restart_below, errors=errors)
            extra = {"codebook": {"counts": counts, "sums": sums, "codebook": codebook}}
            metrics["codes_restarted"] = jnp.sum(dead)
        elif gumbel_restarts:
            errors = aux["errors"] if config.gumbel.restart_from == "error" else None
            counts, dead, picks, _ = restart_draws(
                state["extra"]["distance"]["counts"], aux["codes"], restart_rng,
                decay=config.gumbel.restart_decay, restart_below=restart_below, errors=errors)
            extra = {"distance": {"counts": counts}}
            metrics["codes_restarted"] = jnp.sum(dead)
        new = train_state.apply_update(spec, state, grads, loss, config.optimizer.ema_decay, extra)
        finite = jnp.isfinite(loss)
        if gumbel_restarts:  # dead codes move to batch vectors, in the parameters and their EMA
            new = restart_codebook(new, dead & finite, aux["z"][picks])
        metrics.update(loss=loss, finite=finite.astype(jnp.float32), grad_norm=optax.global_norm(grads),
                       temperature=temperature, beta=beta, noise_scale=noise_scale,
                       learning_rate=schedules["learning_rate"](t))
        return new, metrics

    return _jit_train_step(step, spec)


def make_decoder_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict,
                      schedules: dict[str, optax.Schedule]):
    """`step(state, images_uint8) → (state, metrics)` of the decoder phase (`decoder_phase`).

    Everything but the decoder (encoder, gumbel codebook) is frozen at its moving average, in the
    parameters and in the average itself, so training codes, evaluation codes and `encode` agree;
    a VQ codebook (in `extra`) stops moving too. The loss is the reconstruction term alone, on the
    argmax / nearest codes; the decoder takes an AdamW step of the same optimizer.
    """
    likelihood, sigma = likelihood_of(config.model)

    def step(state, images):
        frozen = {k: v for k, v in state["ema"].items() if k != "decoder"}
        params = {**state["params"], **frozen}
        x = pixels.to_unit(images)
        codes = spec.merge(params, state["extra"]).encode(x)

        def loss_fn(decoder):
            stats = spec.merge({**params, "decoder": decoder}, state["extra"]).decode_stats(codes)
            nll, mse = nll_and_mse(x, stats, likelihood, sigma)
            return jnp.mean(nll), jnp.mean(mse)

        (loss, mse), decoder_grads = jax.value_and_grad(loss_fn, has_aux=True)(params["decoder"])
        grads = {**jax.tree.map(jnp.zeros_like, frozen), "decoder": decoder_grads}
        new = train_state.apply_update(spec, {**state, "params": params}, grads, loss,
                                       config.optimizer.ema_decay)
        # AdamW and the EMA also ran over the frozen parts (the optimizer state keeps one layout
        # for both phases, so checkpoints do not change); their results are dropped here.
        new["params"].update(frozen)
        new["ema"].update(frozen)
        metrics = code_stats(codes, config.model.vocab_size)
        metrics.update(loss=loss, nll=loss, mse=mse,
                       finite=jnp.isfinite(loss).astype(jnp.float32),
                       grad_norm=optax.global_norm(decoder_grads),
                       learning_rate=schedules["learning_rate"](state["step"]))
        return new, metrics

    return _jit_train_step(step, spec)


def _jit_train_step(step, spec: train_state.StateSpec):
    """`step(state, images)` jitted on the state's shardings, images over the batch axes, the
    state donated."""
    return jax.jit(step, in_shardings=(spec.shardings, batch_sharding(spec.mesh, 4)),
                   out_shardings=(spec.shardings, replicated(spec.mesh)), donate_argnums=0)


def nll_and_mse(x: jax.Array, stats: jax.Array, likelihood: str, sigma: float):
    """Per image (B,): the likelihood's nats per pixel value of `x` (in [0, 1], mapped here) under
    the decoder output `stats`, and the squared error of its reconstruction."""
    nll = pixels.nll(pixels.map_pixels(x), stats, likelihood, sigma)
    recon = pixels.reconstruction(pixels.split_stats(stats)[0])
    return (jnp.sum(nll, axis=(1, 2, 3)) / math.prod(x.shape[1:]),
            jnp.mean(jnp.square(recon - x), axis=(1, 2, 3)))


def restart_codebook(state: dict, dead: jax.Array, vectors: jax.Array) -> dict:
    """`state` with the rows `dead` (V,) of the gumbel distance codebook set to `vectors` (V, D),
    in the parameters and in their moving average (the optimizer's moments are kept). `state` is
    the fresh tree `train_state.apply_update` built, so its codebook entries are replaced in place."""
    for key in ("params", "ema"):
        distance = state[key]["distance"]
        distance["codebook"] = jnp.where(dead[:, None], vectors, distance["codebook"])
    return state


def make_eval_step(spec: train_state.StateSpec, model_config: ml_collections.ConfigDict):
    """`eval(params, extra, images) → sums` over a batch with argmax (hard) codes.

    `model_config` is `config.model`: its vocab_size and likelihood (and σ) are read.
    Sums: `count` images, `mse` and `psnr` (per image, summed), `nll` and `kl` (nats per pixel
    value, summed over images), and `code_counts` (vocab,).
    """

    vocab_size = model_config.vocab_size
    likelihood, sigma = likelihood_of(model_config)

    def run(params, extra, images):
        model = spec.merge(params, extra)
        x = pixels.to_unit(images)
        dims = math.prod(x.shape[1:])
        enc = model.encoder_output(x)
        codes = model.codes_of(enc)  # the encoder runs once
        nll, mse = nll_and_mse(x, model.decode_stats(codes), likelihood, sigma)
        if model.codebook is None:
            kl = jnp.sum(kl_to_uniform(enc), axis=(1, 2)) / dims
        else:  # a deterministic posterior against the uniform prior: ln V per position
            kl = jnp.full(x.shape[:1], codes[0].size * math.log(vocab_size) / dims)
        return {"count": jnp.float32(x.shape[0]), "mse": mse.sum(),
                "psnr": jnp.sum(10 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))),
                "nll": nll.sum(), "kl": kl.sum(),
                "code_counts": jnp.bincount(codes.reshape(-1), length=vocab_size)}

    return jax.jit(run, in_shardings=(spec.shardings["ema"], spec.shardings["extra"],
                                      batch_sharding(spec.mesh, 4)),
                   out_shardings=replicated(spec.mesh))


def summarize(sums: dict) -> dict[str, float]:
    """Eval sums over batches → PSNR, MSE, ELBO bits per dimension, code perplexity and usage."""
    n = float(sums["count"])
    usage = usage_stats(sums["code_counts"])
    nll, kl = float(sums["nll"]) / n, float(sums["kl"]) / n
    return {"psnr": float(sums["psnr"]) / n, "mse": float(sums["mse"]) / n,
            "nll": nll, "kl": kl, "elbo_bpd": float(bits_per_dim(nll + kl)),
            "perplexity": float(usage["perplexity"]), "codes_used": float(usage["codes_used"]),
            "images": n}
