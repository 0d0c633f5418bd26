"""Evaluation of a trained workdir; prints one JSON line.

  python -m dalle_jax.evaluate --workdir=workdirs/dvae_shapes [--split=validation] [--num_batches=N]

For a stage-1 workdir: PSNR and MSE of the reconstructions from argmax codes, bits per dimension
of the ELBO, codebook perplexity and the share of codes used, with the parameter EMA; for a
model trained on `shapes`, also `checker`: the share of `--num_captions` reconstructed scenes
whose colour, shape and position still match their caption (0 skips it).

  python -m dalle_jax.evaluate --workdir=workdirs/dalle_small --split=heldout \
      [--clip_workdir=workdirs/clip_small --rerank_from=32] [--num_captions=64] \
      [--temperature=1 --top_k=0 --top_p=1 --guidance=1 --seed=0]

For a transformer trained on `shapes`: samples for the split's captions, judged by a checker that
does not use the model (colour from pixels, shape from a classifier trained on rendered shapes,
position from the object's centre): the share of samples whose colour, shape, position and all
three match, without and with CLIP reranking, plus the split's loss and bits per image token.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from dalle_jax.cli import define_sampling_flags, fail, join_hosts, parse_flags, sampling_settings
from dalle_jax.xla_cpu.huge_pages import use_huge_pages


def evaluate_dvae(workdir: str, split: str | None, num_batches: int | None,
                  num_judged: int = 0) -> dict:
    """Metrics of a stage-1 workdir on `split` (default: the config's eval split).

    For a model trained on `shapes`, `num_judged` > 0 also judges its reconstructions of that many
    scenes against their captions (`checker`: what any transformer on these codes can reach).
    """
    from dalle_jax.data import pipeline
    from dalle_jax.training.dvae import steps as dvae_steps
    from dalle_jax.training.dvae import trainer as dvae_trainer
    from dalle_jax.generation.dvae import TrainedDVAE

    dvae = TrainedDVAE.load(workdir)
    config = dvae.config
    split = split or config.data.eval_split
    tokenizer = pipeline.ensure_tokenizer(config, workdir)
    loader = pipeline.make_loader(config, split, tokenizer, mesh=dvae.mesh, num_epochs=1, shuffle=False)
    eval_step = dvae_steps.make_eval_step(dvae.spec, config.model)
    try:
        metrics = dvae_trainer.evaluate(dvae.spec, dvae.model_state, eval_step, loader,
                                        num_batches or 10**9)
    finally:
        loader.close()
    record = {"workdir": workdir, "step": dvae.step, "split": split,
              "quantizer": config.model.quantizer, **metrics}
    if num_judged and config.data.dataset == "shapes":
        from dalle_jax.evaluation import shapes_eval

        record["checker"] = shapes_eval.judge_reconstructions(
            dvae, split, num_judged, shapes_eval.default_classifier_path(workdir))
    return record


def evaluate_dalle(workdir: str, split: str | None, num_batches: int | None, *,
                   clip_workdir: str | None, num_captions: int, rerank_from: int, seed: int,
                   temperature: float, top_k: int, top_p: float = 1.0,
                   guidance: float = 1.0) -> dict:
    """Caption-match shares and loss of a stage-2 workdir trained on `shapes`, its samples drawn
    with these settings (`guidance` ≠ 1 needs a transformer trained with caption dropout)."""
    from dalle_jax.evaluation import shapes_eval
    from dalle_jax.generation.generator import Generator
    from dalle_jax.generation.rerank import load_ranker
    from dalle_jax.generation.sampling import Settings

    gen = Generator.load(workdir)
    settings = Settings(temperature=temperature, top_k=top_k, top_p=top_p,
                        guidance=guidance).check(gen.model.image_vocab)
    split = split or gen.config.data.eval_split
    ranker = load_ranker(clip_workdir) if clip_workdir else None
    record = shapes_eval.evaluate(
        gen, split=split, num_captions=num_captions, ranker=ranker, rerank_from=rerank_from,
        seed=seed, settings=settings,
        classifier_path=shapes_eval.default_classifier_path(workdir), loss_batches=num_batches)
    return {"workdir": workdir, "step": gen.step, "clip_workdir": clip_workdir, **record}


def main(argv: list[str]) -> None:
    """Parses flags, evaluates, prints JSON."""
    workdir = flags.DEFINE_string("workdir", None, "a training workdir")
    split = flags.DEFINE_string("split", None, "split to evaluate (default: the config's eval split)")
    num_batches = flags.DEFINE_integer("num_batches", None, "stop after this many batches (default: all)")
    clip_workdir = flags.DEFINE_string("clip_workdir", None, "transformer: rerank with this CLIP")
    num_captions = flags.DEFINE_integer("num_captions", 64, "transformer: captions to sample for; "
                                        "dVAE on shapes: scenes whose reconstructions are judged")
    rerank_from = flags.DEFINE_integer("rerank_from", 32, "transformer: samples per caption CLIP "
                                       "picks the best of")
    seed = flags.DEFINE_integer("seed", 0, "transformer: sampling seed")
    define_sampling_flags("transformer: ")
    flags.mark_flags_as_required(["workdir"])
    parse_flags("python -m dalle_jax.evaluate", argv)
    join_hosts()
    from dalle_jax.training import checkpoint

    try:
        family = checkpoint.load_config(workdir.value).model.family
        if family == "dvae":
            print(json.dumps(evaluate_dvae(workdir.value, split.value, num_batches.value,
                                           num_captions.value)))
        elif family == "dalle":
            print(json.dumps(evaluate_dalle(
                workdir.value, split.value, num_batches.value, clip_workdir=clip_workdir.value,
                num_captions=num_captions.value, rerank_from=rerank_from.value, seed=seed.value,
                **sampling_settings())))
        else:
            fail(f"evaluation of model.family={family!r} is not available")
    except (ValueError, FileNotFoundError, KeyError) as e:
        fail(e)


if __name__ == "__main__":
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])
