"""All three models end to end in one run: dVAE → codes → transformer, CLIP, then samples.

`train --config=configs/quickstart.py --workdir=W` trains the config's `dvae` section in W/dvae,
encodes the prepared dataset with it into W/codes (`image_codes`), trains the `dalle` section on
those codes in W/dalle and the `clip` section on the images in W/clip, then draws `sample.prompts`
and writes W/samples.png and W/samples.json (reranked by the CLIP model); with `sample.judge`,
the `shapes` caption checker judges every sample and the share of the shown ones that pass is
logged and returned. Every stage resumes from
its own checkpoints, and the codes are reused once written, so re-running the command continues
where it stopped.
"""

from __future__ import annotations

import logging
import os

import ml_collections

from dalle_jax.data import pipeline
from dalle_jax.data.image_codes import image_codes
from dalle_jax.generation.sampling import Settings
from dalle_jax.generation.dvae import TrainedDVAE


def _stage(section: ml_collections.ConfigDict, **data) -> ml_collections.ConfigDict:
    """A copy of a stage's config section with `data` fields replaced."""
    stage = ml_collections.ConfigDict(section.to_dict())
    stage.data.update(data)
    return stage


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage; returns each stage's last validation metrics and the samples' path."""
    from dalle_jax.generation.grid import generate
    from dalle_jax.training.clip import trainer as clip_trainer
    from dalle_jax.training.dalle import trainer as dalle_trainer
    from dalle_jax.training.dvae import trainer as dvae_trainer

    data_dir = config.data_dir
    paths = {name: os.path.join(workdir, name) for name in ("dvae", "codes", "dalle", "clip")}
    results = {}
    logging.info("stage 1/4: the dVAE in %s", paths["dvae"])
    dvae = _stage(config.dvae, data_dir=data_dir)
    results["dvae"] = dvae_trainer.train_and_evaluate(dvae, paths["dvae"])
    logging.info("stage 2/4: encoding %s into %s", dvae.data.dataset, paths["codes"])
    source = pipeline.prepare_data(dvae.data)  # already there: names the prepared config
    codes = image_codes.prepare(TrainedDVAE.load(paths["dvae"]), dvae.data.dataset, data_dir,
                                config=source["config"], splits=tuple(config.encode_splits),
                                out_data_dir=paths["codes"])
    logging.info("stage 3/4: the transformer in %s", paths["dalle"])
    dalle = _stage(config.dalle, data_dir=paths["codes"], config=codes["config"])
    results["dalle"] = dalle_trainer.train_and_evaluate(dalle, paths["dalle"])
    logging.info("stage 4/4: CLIP in %s", paths["clip"])
    results["clip"] = clip_trainer.train_and_evaluate(_stage(config.clip, data_dir=data_dir),
                                                      paths["clip"])
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
