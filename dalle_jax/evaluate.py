"""Evaluation of a trained workdir; prints one JSON line.

  python -m dalle_jax.evaluate --workdir=workdirs/dvae_shapes [--split=validation] [--num_batches=N]

For a stage-1 workdir: PSNR and MSE of the reconstructions from argmax codes, bits per dimension
of the ELBO, codebook perplexity and the share of codes used, with the parameter EMA.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from dalle_jax.cli import fail, parse_flags


def evaluate_dvae(workdir: str, split: str | None, num_batches: int | None) -> dict:
    """Metrics of a stage-1 workdir on `split` (default: the config's eval split)."""
    from dalle_jax.data import pipeline
    from dalle_jax.training import dvae_steps, dvae_trainer
    from dalle_jax.training.dvae_inference import ImageCodec

    codec = ImageCodec.load(workdir)
    config = codec.config
    split = split or config.data.eval_split
    tokenizer = pipeline.ensure_tokenizer(config, workdir)
    loader = pipeline.make_loader(config, split, tokenizer, mesh=codec.mesh, num_epochs=1, shuffle=False)
    eval_step = dvae_steps.make_eval_step(codec.spec, config.model.vocab_size)
    try:
        metrics = dvae_trainer.evaluate(codec.spec, codec.model_state, eval_step, loader,
                                        num_batches or 10**9)
    finally:
        loader.close()
    return {"workdir": workdir, "step": codec.step, "split": split, "quantizer": config.model.quantizer,
            **metrics}


def main(argv: list[str]) -> None:
    """Parses flags, evaluates, prints JSON."""
    workdir = flags.DEFINE_string("workdir", None, "a training workdir")
    split = flags.DEFINE_string("split", None, "split to evaluate (default: the config's eval split)")
    num_batches = flags.DEFINE_integer("num_batches", None, "stop after this many batches (default: all)")
    flags.mark_flags_as_required(["workdir"])
    parse_flags("python -m dalle_jax.evaluate", argv)
    from dalle_jax.training import checkpoint

    try:
        family = checkpoint.load_config(workdir.value).model.family
        if family != "dvae":
            fail(f"evaluation of model.family={family!r} is not available yet")
        print(json.dumps(evaluate_dvae(workdir.value, split.value, num_batches.value)))
    except (ValueError, FileNotFoundError, KeyError) as e:
        fail(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
