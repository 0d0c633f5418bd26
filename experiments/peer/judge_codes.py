"""Judges code grids another model drew for `shapes` captions, decoded by our dVAE.

Run with the project's Python on train_codes.py's samples.npz:

  python experiments/peer/judge_codes.py --workdir=workdirs/shapes/dalle \\
      --samples=workdirs/shapes/peer/samples.npz

For each split in the file (`<split>_codes` (prompts, samples, grid²), `<split>_prompts`), the
transformer workdir's dVAE decodes every grid and the caption checker of `evaluate` judges it
(`shapes_eval.judge_codes`): the first sample's shares per check, and `sample_mean`, the share of
all samples passing every check. Prints one JSON line per split. With --grid_prefix=P, also writes
P_<split>.png: the first 4 samples of the first 6 prompts, each marked with the checker's verdict.
"""

import argparse
import json
import sys

import numpy as np


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a transformer workdir: its dVAE decodes")
    p.add_argument("--samples", required=True, help="an .npz of <split>_codes and <split>_prompts")
    p.add_argument("--name", default="dalle-pytorch", help="label copied into each line")
    p.add_argument("--grid_prefix", default="", help="write <prefix>_<split>.png sample grids")
    args = p.parse_args(argv)
    from dalle_jax.evaluation import shapes_eval
    from dalle_jax.generation.generator import Generator

    samples = np.load(args.samples)
    splits = [k[: -len("_codes")] for k in samples.files if k.endswith("_codes")]
    if not splits:
        raise SystemExit(f"{args.samples} holds no <split>_codes array")
    gen = Generator.load(args.workdir)
    for split in splits:
        prompts = [str(x) for x in samples[f"{split}_prompts"]]
        record = shapes_eval.judge_codes(gen, prompts, samples[f"{split}_codes"],
                                         shapes_eval.default_classifier_path(args.workdir))
        print(json.dumps({"name": args.name, "split": split, "captions": len(prompts), **record}))
        if args.grid_prefix:
            grid(gen, prompts[:6], samples[f"{split}_codes"][:6, :4], f"{args.grid_prefix}_{split}.png",
                 shapes_eval.default_classifier_path(args.workdir), args.name)


def grid(gen, prompts, codes, path, classifier_path, name):
    """A PNG of the decoded samples, a row per prompt, each captioned with the verdict."""
    from dalle_jax.evaluation import shapes_eval
    from dalle_jax.visualize import save_grid

    images = gen.decode(codes.reshape(*codes.shape[:2], gen.grid, gen.grid))
    passes = shapes_eval.judge_samples(images, prompts, classifier_path)
    captions = [f"{p} ({'passes' if ok else 'fails'})" for p, row in zip(prompts, passes)
                for ok in row]
    save_grid(images.reshape(-1, *images.shape[2:]), captions, path, columns=codes.shape[1],
              title=f"{name} (our dVAE decodes)")


if __name__ == "__main__":
    main(sys.argv[1:])
