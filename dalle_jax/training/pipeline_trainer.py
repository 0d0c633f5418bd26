"""All three models end to end in one run: dVAE → codes → transformer, CLIP, then samples.

`train --config=configs/quickstart.py --workdir=W` trains the config's `dvae` section in W/dvae,
encodes the prepared dataset with it into W/codes (`image_codes`), trains the `dalle` section on
those codes in W/dalle and the `clip` section on the images in W/clip, then draws `sample.prompts`
and writes W/samples.png and W/samples.json (reranked by the CLIP model); with `sample.judge`,
the `shapes` caption checker judges every sample and the share of the shown ones that pass is
logged and returned. Every stage resumes from
its own checkpoints, and the codes are reused once written, so re-running the command continues
where it stopped. `stages` (a comma list of `STAGES`, default all) runs only some of them, e.g.
`--config.stages=dalle` to time the transformer alone; a stage whose input an earlier stage writes
needs that stage's output in the workdir already.
"""

from __future__ import annotations

import logging
import os

import ml_collections

from dalle_jax.data import pipeline
from dalle_jax.data.image_codes import image_codes
from dalle_jax.generation.sampling import Settings
from dalle_jax.generation.dvae import TrainedDVAE


STAGES = ("dvae", "codes", "dalle", "clip", "samples")
# What each stage reads from the workdir, written by an earlier stage.
_NEEDS = {"codes": ("dvae",), "dalle": ("dvae", "codes"), "samples": ("dvae", "dalle", "clip")}


def parse_stages(text: str) -> tuple[str, ...]:
    """The stages a comma list names, in pipeline order; a ValueError names an unknown one."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise ValueError(f"stages={text!r}: choose a comma list of {', '.join(STAGES)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return tuple(s for s in STAGES if s in names)


def _check_inputs(stages: tuple[str, ...], paths: dict[str, str]) -> None:
    """A FileNotFoundError when a stage would run without an earlier stage's output."""
    for stage in stages:
        for need in _NEEDS.get(stage, ()):
            if need not in stages and not os.path.isdir(paths[need]):
                raise FileNotFoundError(f"stage {stage!r} needs {paths[need]} (stage {need!r}); "
                                        f"add {need!r} to stages")


def _stage(section: ml_collections.ConfigDict, **data) -> ml_collections.ConfigDict:
    """A copy of a stage's config section with `data` fields replaced."""
    stage = ml_collections.ConfigDict(section.to_dict())
    stage.data.update(data)
    return stage


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage; returns each stage's last validation metrics and the samples' path."""
    from dalle_jax.training.clip import trainer as clip_trainer
    from dalle_jax.training.dalle import trainer as dalle_trainer
    from dalle_jax.training.dvae import trainer as dvae_trainer

    data_dir = config.data_dir
    stages = parse_stages(config.get("stages", ",".join(STAGES)))
    paths = {name: os.path.join(workdir, name) for name in ("dvae", "codes", "dalle", "clip")}
    _check_inputs(stages, paths)
    results = {}
    dvae = _stage(config.dvae, data_dir=data_dir)
    if "dvae" in stages:
        logging.info("stage dvae: the dVAE in %s", paths["dvae"])
        results["dvae"] = dvae_trainer.train_and_evaluate(dvae, paths["dvae"])
    if "codes" in stages or "dalle" in stages:
        # Codes already written are kept (this then only names their config).
        logging.info("stage codes: %s encoded by the dVAE into %s", dvae.data.dataset,
                     paths["codes"])
        source = pipeline.prepare_data(dvae.data)  # already there: names the prepared config
        codes = image_codes.prepare(TrainedDVAE.load(paths["dvae"]), dvae.data.dataset, data_dir,
                                    config=source["config"], splits=tuple(config.encode_splits),
                                    out_data_dir=paths["codes"])
    if "dalle" in stages:
        logging.info("stage dalle: the transformer in %s", paths["dalle"])
        dalle = _stage(config.dalle, data_dir=paths["codes"], config=codes["config"])
        results["dalle"] = dalle_trainer.train_and_evaluate(dalle, paths["dalle"])
    if "clip" in stages:
        logging.info("stage clip: CLIP in %s", paths["clip"])
        results["clip"] = clip_trainer.train_and_evaluate(_stage(config.clip, data_dir=data_dir),
                                                          paths["clip"])
    if "samples" in stages:
        results.update(_samples(config, workdir, paths))
    return results


def _samples(config: ml_collections.ConfigDict, workdir: str, paths: dict[str, str]) -> dict:
    """Draws `sample.prompts`, reranked by the CLIP, into W/samples.png (+ samples.json)."""
    from dalle_jax.generation.grid import generate

    results = {}
    s = config.sample
    out = os.path.join(workdir, "samples.png")
    record = generate(workdir=paths["dalle"], prompts=list(s.prompts), out=out,
                      num_samples=s.num_samples, rerank=s.rerank, seed=s.seed,
                      settings=Settings(s.temperature, s.top_k, s.top_p, s.guidance),
                      clip_workdir=paths["clip"], dvae_workdir=paths["dvae"],
                      judge=s.get("judge", False))
    results["samples"] = out
    if "shown_pass_rate" in record:
        results["shown_pass_rate"] = record["shown_pass_rate"]
        results["pass_rate"] = record["pass_rate"]
        logging.info("samples: %.0f%% of those in %s show their prompt (the caption checker), "
                     "%.0f%% of all drawn", 100 * record["shown_pass_rate"], out,
                     100 * record["pass_rate"])
    return results
