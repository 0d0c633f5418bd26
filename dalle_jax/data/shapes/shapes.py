"""TFDS builder of the synthetic `shapes` dataset (array_record), and `prepare()`.

Variant `objects`: one or two coloured shapes on a background, captioned from templates with
synonyms, with the structured attributes stored beside each image. Variant `words`: a short word in
coloured letters. Splits `train`, `validation`, `test` and `heldout`; `heldout` holds exactly the
scenes with a (colour, shape) pair from `heldout_pairs`, which the other splits never contain.

Build it with `python -m dalle_jax.data prepare --dataset=shapes --data_dir=DIR`. Every option
that changes the data is in the config name, so other options never reuse stale data.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from dalle_jax.data.shapes import render, scenes
from dalle_jax.data.summary import prepared_summary
from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, DEFAULT_HELDOUT_PAIRS, POSITIONS, RELATIONS, SHAPES, SIZES,
)

VARIANTS = ("objects", "words")
SPLITS = ("train", "validation", "test", "heldout")
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Options of one prepared `shapes` dataset."""

    variant: str = "objects"
    resolution: int = 64
    counts: tuple = (20000, 1000, 1000, 1000)  # train, validation, test, heldout
    seed: int = 0
    heldout_pairs: tuple = DEFAULT_HELDOUT_PAIRS


def make_config(
    variant: str = "objects",
    resolution: int = 64,
    num_train: int = 20000,
    num_validation: int = 1000,
    num_test: int = 1000,
    num_heldout: int = 1000,
    seed: int = 0,
    heldout_pairs: Sequence[tuple[str, str]] | None = None,
) -> ShapesConfig:
    """Checks the options and names the config after every one of them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown shapes variant {variant!r}; choose one of {list(VARIANTS)}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution={resolution} is outside [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")
    counts = (num_train, num_validation, num_test, num_heldout)
    for split, n in zip(SPLITS, counts):
        if n <= 0:
            raise ValueError(f"num_{split}={n} must be positive")
    pairs = tuple(sorted(tuple(p) for p in (heldout_pairs or DEFAULT_HELDOUT_PAIRS)))
    for colour, shape in pairs:
        if colour not in COLOURS:
            raise ValueError(f"held-out colour {colour!r} is not one of {list(COLOURS)}")
        if shape not in SHAPES:
            raise ValueError(f"held-out shape {shape!r} is not one of {list(SHAPES)}")
    digest = hashlib.sha1(repr(pairs).encode()).hexdigest()[:6]
    name = f"{variant}-{resolution}px-n{'-'.join(map(str, counts))}-s{seed}-h{digest}"
    return ShapesConfig(name=name, description=f"{variant} scenes at {resolution}px",
                        variant=variant, resolution=resolution, counts=counts, seed=seed,
                        heldout_pairs=pairs)


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic captioned scenes of coloured shapes or coloured words."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [make_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        label = tfds.features.ClassLabel
        features = {
            "image": tfds.features.Image(shape=(cfg.resolution, cfg.resolution, 3),
                                         encoding_format="png"),
            "caption": tfds.features.Text(),
            "background": label(names=list(BACKGROUNDS)),
        }
        if cfg.variant == "objects":
            features["objects"] = tfds.features.Sequence({
                "shape": label(names=list(SHAPES)),
                "colour": label(names=list(COLOURS)),
                "size": label(names=list(SIZES)),
                "position": label(names=list(POSITIONS)),
            })
            features["relation"] = label(names=list(RELATIONS))
        else:
            features["word"] = tfds.features.Text()
            features["colour"] = label(names=list(COLOURS))
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(heldout_pairs=[list(p) for p in cfg.heldout_pairs]),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {split: self._generate_examples(i, n) for i, (split, n) in enumerate(zip(SPLITS, cfg.counts))}

    def _generate_examples(self, split_id: int, num: int):
        cfg = self.builder_config
        heldout = frozenset(cfg.heldout_pairs)
        for index in range(num):
            # One rng per example: the data depend only on (seed, split, index).
            rng = np.random.default_rng([cfg.seed, split_id, index])
            if cfg.variant == "objects":
                scene = scenes.sample_objects_scene(rng, heldout, SPLITS[split_id] == "heldout")
                image = render.render_objects(scene, cfg.resolution, rng)
                caption = scenes.objects_caption(scene, rng)
            else:
                scene = scenes.sample_word_scene(rng)
                image = render.render_word(scene, cfg.resolution, rng)
                caption = scenes.word_caption(scene, rng)
            yield f"{SPLITS[split_id]}-{index:07d}", {"image": image, "caption": caption, **scene}


def prepare(data_dir: str, **options) -> dict:
    """Prepares `shapes` under `data_dir` (or reuses it) and returns its summary.

    `options` are those of `make_config` (variant, resolution, num_train, num_validation,
    num_test, num_heldout, seed, heldout_pairs); an unknown one is a TypeError naming it.
    """
    config = make_config(**options)
    # TFDS wants a config equal to a registered one (the defaults) by name.
    registered = {c.name for c in Shapes.BUILDER_CONFIGS}
    builder = Shapes(config=config.name if config.name in registered else config, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return prepared_summary("shapes", config.name, builder.data_dir,
                            {s: builder.info.splits[s].num_examples for s in SPLITS})
