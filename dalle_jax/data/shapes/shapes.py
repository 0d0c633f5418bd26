"""TFDS builder of the synthetic `shapes` dataset (array_record), and `prepare()`.

Variant `objects`: one or two coloured shapes on a background, captioned from templates with
synonyms, with the structured attributes stored beside each image. Variant `bold`: the same
scenes and captions with every object large and centred in its cell on white (`styles.STYLES`),
a world whose outlines survive 8-pixel image codes (at 72 px a cell is 3 × 3 codes). Variant
`words`: a short word in coloured letters. Splits `train`, `validation`, `test` and `heldout`.
For the object variants, `heldout` holds exactly the scenes with a (colour, shape) pair from
`heldout_pairs`, which the other splits never contain; for `words` it is one more sample of the
same distribution.

Build it with `python -m dalle_jax.data prepare --dataset=shapes --data_dir=DIR`, or call
`prepare(DIR, ...)`. Every option that changes the data is in the config name
(`objects-64px-n20000-1000-1000-1000-s0-h<hash of heldout_pairs>`), so other options never reuse
stale data and the same options reuse what is there. TF is needed only to encode images while
preparing; `tfds.builder_from_directory(path).as_data_source(split)` reads it back without TF.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from dalle_jax.data.shapes import render, scenes
from dalle_jax.data.shapes.styles import STYLES
from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, DEFAULT_HELDOUT_PAIRS, POSITIONS, RELATIONS, SHAPES, SIZES,
)
from dalle_jax.data.local_info import LocalDatasetInfo
from dalle_jax.data.summary import prepared_summary

VARIANTS = (*STYLES, "words")
SPLITS = ("train", "validation", "test", "heldout")
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256
DEFAULT_COUNTS = {"train": 20000, "validation": 1000, "test": 1000, "heldout": 1000}


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Options of one prepared `shapes` dataset (made by `make_config`, which checks them)."""

    variant: str = "objects"
    resolution: int = 64
    counts: tuple = tuple(DEFAULT_COUNTS.values())  # train, validation, test, heldout
    seed: int = 0
    heldout_pairs: tuple = DEFAULT_HELDOUT_PAIRS


def _check_pairs(heldout_pairs: Sequence[tuple[str, str]] | None) -> tuple:
    """Held-out (colour, shape) pairs, checked, deduplicated and sorted (a canonical name)."""
    if heldout_pairs is None:
        heldout_pairs = DEFAULT_HELDOUT_PAIRS
    pairs = []
    for pair in heldout_pairs:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"held-out pair {pair!r} is not a (colour, shape) pair")
        colour, shape = pair
        if colour not in COLOURS:
            raise ValueError(f"held-out colour {colour!r} is not one of {list(COLOURS)}")
        if shape not in SHAPES:
            raise ValueError(f"held-out shape {shape!r} is not one of {list(SHAPES)}")
        pairs.append((colour, shape))
    pairs = tuple(sorted(set(pairs)))
    if not pairs:
        raise ValueError(f"heldout_pairs={list(heldout_pairs)!r} is empty; heldout needs a pair")
    if len(pairs) == len(COLOURS) * len(SHAPES):
        raise ValueError("heldout_pairs holds every (colour, shape) pair; train would have none")
    return pairs


def _check_int(name: str, value) -> int:
    """`value` as an int; ValueError naming it if it is not a whole number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r} must be an integer")
    return int(value)


def make_config(
    variant: str = "objects",
    resolution: int = 64,
    num_train: int = DEFAULT_COUNTS["train"],
    num_validation: int = DEFAULT_COUNTS["validation"],
    num_test: int = DEFAULT_COUNTS["test"],
    num_heldout: int = DEFAULT_COUNTS["heldout"],
    seed: int = 0,
    heldout_pairs: Sequence[tuple[str, str]] | None = None,
) -> ShapesConfig:
    """Checks the options (ValueError naming a bad one) and names the config after all of them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown shapes variant {variant!r}; choose one of {list(VARIANTS)}")
    resolution, seed = _check_int("resolution", resolution), _check_int("seed", seed)
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution={resolution} is outside [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")
    if seed < 0:
        raise ValueError(f"seed={seed} must be non-negative")
    counts = (num_train, num_validation, num_test, num_heldout)
    counts = tuple(_check_int(f"num_{split}", n) for split, n in zip(SPLITS, counts))
    for split, n in zip(SPLITS, counts):
        if n <= 0:
            raise ValueError(f"num_{split}={n} must be positive")
    pairs = _check_pairs(heldout_pairs)
    digest = hashlib.sha1(repr(pairs).encode()).hexdigest()[:6]
    name = f"{variant}-{resolution}px-n{'-'.join(map(str, counts))}-s{seed}-h{digest}"
    return ShapesConfig(name=name, description=f"{variant} scenes at {resolution}px",
                        variant=variant, resolution=resolution, counts=counts, seed=seed,
                        heldout_pairs=pairs)


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic captioned scenes of coloured shapes or coloured words."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "First release.", "1.1.0": "Adds `num_objects`.",
                     "1.2.0": "`words`: letters always inside the image, font shrunk to fit."}
    # Only the defaults are registered; other options make a config at run time (`make_config`).
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
        if cfg.variant in STYLES:
            features["objects"] = tfds.features.Sequence({
                "shape": label(names=list(SHAPES)),
                "colour": label(names=list(COLOURS)),
                "size": label(names=list(SIZES)),
                "position": label(names=list(POSITIONS)),
            })
            features["num_objects"] = tfds.features.Scalar(dtype=np.int32)
            features["relation"] = label(names=list(RELATIONS))
        else:
            features["word"] = tfds.features.Text()
            features["colour"] = label(names=list(COLOURS))
        return LocalDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(heldout_pairs=[list(p) for p in cfg.heldout_pairs]),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        counts = self.builder_config.counts
        return {split: self._generate_examples(split, n) for split, n in zip(SPLITS, counts)}

    def _generate_examples(self, split: str, num: int):
        cfg = self.builder_config
        heldout = frozenset(cfg.heldout_pairs)
        for index in range(num):
            # One rng per example: an example depends only on (seed, split, index).
            rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
            if cfg.variant in STYLES:
                style = STYLES[cfg.variant]
                scene = scenes.sample_objects_scene(rng, heldout, split == "heldout", style)
                image = render.render_objects(scene, cfg.resolution, rng, style)
                caption = scenes.objects_caption(scene, rng)
                scene = dict(scene, num_objects=len(scene["objects"]))
            else:
                scene = scenes.sample_word_scene(rng)
                image = render.render_word(scene, cfg.resolution, rng)
                caption = scenes.word_caption(scene, rng)
            yield f"{split}-{index:07d}", {"image": image, "caption": caption, **scene}


def make_builder(data_dir: str, **options) -> Shapes:
    """The builder for `options` (those of `make_config`), not prepared."""
    config = make_config(**options)
    # TFDS wants a config equal to a registered one (the defaults) by name.
    registered = {c.name for c in Shapes.BUILDER_CONFIGS}
    return Shapes(config=config.name if config.name in registered else config, data_dir=data_dir)


def prepare(
    data_dir: str,
    *,
    variant: str = "objects",
    resolution: int = 64,
    num_train: int = DEFAULT_COUNTS["train"],
    num_validation: int = DEFAULT_COUNTS["validation"],
    num_test: int = DEFAULT_COUNTS["test"],
    num_heldout: int = DEFAULT_COUNTS["heldout"],
    seed: int = 0,
    heldout_pairs: Sequence[tuple[str, str]] | None = None,
) -> dict:
    """Prepares `shapes` under `data_dir` as array_record (or reuses it) and returns its summary.

    The options are those of `make_config`; a bad value is a ValueError naming it. Preparing
    again with the same options reuses the data already there. The summary is
    `{"dataset": "shapes", "config", "path", "splits": {split: count}, "skipped"}`, the counts
    read from the prepared dataset's info.
    """
    builder = make_builder(
        data_dir, variant=variant, resolution=resolution, num_train=num_train,
        num_validation=num_validation, num_test=num_test, num_heldout=num_heldout, seed=seed,
        heldout_pairs=heldout_pairs)
    builder.download_and_prepare(file_format="array_record")
    return prepared_summary("shapes", builder.builder_config.name, builder.data_dir,
                            {s: builder.info.splits[s].num_examples for s in SPLITS})
