"""How well a CLIP workdir tells a `shapes` caption from the caption with one attribute swapped.

For the first N scenes of each split, every image is scored against its own caption and against a
hard negative of one kind at a time (`data.shapes.negatives`: colour, shape, position, relation);
prints one JSON line per workdir and split: per kind, the share of images whose own caption scores
higher, and how many images had a negative of that kind. A reranker that is blind to shape shows it
here as a shape share near 0.5. `image_shape` asks the reranking question instead: the share of
captions that score their own image above the same scene with one object's shape changed
(`data.shapes.negative_images`).

    python experiments/shapes/clip_probe.py WORKDIR [WORKDIR ...] [--splits=validation,heldout]
        [--count=512] [--step=S]
"""

import json
import sys

import numpy as np
from absl import app, flags
from PIL import Image

from dalle_jax.data import pipeline
from dalle_jax.data.imaging import resize_center_crop
from dalle_jax.data.shapes.negative_images import negative_images
from dalle_jax.data.shapes.negatives import KINDS, negative_caption
from dalle_jax.evaluation.shapes_eval import _first_caption
from dalle_jax.generation.rerank import Reranker

SPLITS = flags.DEFINE_list("splits", ["validation", "heldout"], "splits to probe")
COUNT = flags.DEFINE_integer("count", 512, "scenes per split")
STEP = flags.DEFINE_integer("step", None, "checkpoint step to probe (default: the newest)")


def probe(ranker: Reranker, split: str, count: int) -> dict:
    """{kind: {'accuracy', 'count'}} over the first `count` scenes of `split`."""
    data = ranker.config.data
    source = pipeline.open_split(data, split)
    examples = [source[i] for i in range(min(count, len(source)))]
    images = np.stack([resize_center_crop(Image.fromarray(np.asarray(e[data.image_key])),
                                          ranker.model.resolution) for e in examples])
    captions = [_first_caption(e[data.caption_key]) for e in examples]
    image_e = np.asarray(ranker.image_embeddings(images))
    text_e = np.asarray(ranker.text_embeddings(captions))
    own = np.sum(image_e * text_e, axis=1)
    out = {}
    for kind in KINDS:
        rng = np.random.default_rng(0)
        negatives = [negative_caption(c, rng, kinds=(kind,)) for c in captions]
        has = np.array([bool(n) for n in negatives])
        if not has.any():
            continue
        other = np.sum(image_e[has] * ranker.text_embeddings([n for n in negatives if n]), axis=1)
        out[kind] = {"accuracy": float(np.mean(own[has] > other)), "count": int(has.sum())}
    changed, has = negative_images(images, captions, seed=0)
    other = np.sum(np.asarray(ranker.image_embeddings(changed[has])) * text_e[has], axis=1)
    out["image_shape"] = {"accuracy": float(np.mean(own[has] > other)), "count": int(has.sum())}
    return out


def main(argv):
    for workdir in argv[1:]:
        ranker = Reranker.load(workdir, step=STEP.value)
        for split in SPLITS.value:
            print(json.dumps({"clip_workdir": workdir, "step": ranker.step, "split": split,
                              **probe(ranker, split, COUNT.value)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    app.run(main)
