"""Draw images for text prompts from a trained transformer; optionally rerank them with CLIP.

  python -m dalle_jax.sample --workdir=workdirs/dalle_small --prompt="a red circle" \\
      --num_samples=16 --out=samples.png
  python -m dalle_jax.sample --workdir=… --clip_workdir=workdirs/clip_small \\
      --prompts_file=prompts.txt --num_samples=32 --rerank=4 --top_k=64 --out=best.png
  python -m dalle_jax.sample --workdir=… --prompt="a red circle" --complete=photo.png \\
      --keep_rows=4 --out=completed.png

Writes a PNG grid (one row of samples per prompt, captions under the images) and, beside it, a
JSON file (same name, .json) with every sample's prompt, index, CLIP score and rank. With
`--rerank=K` only the K best-scored samples of each prompt go into the grid. `--complete` keeps
the codes of the first `--keep_rows` rows of an image and samples the rest (paper §3).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import flags
from etils import epath

from dalle_jax.cli import define_sampling_flags, fail, join_hosts, parse_flags, sampling_settings
from dalle_jax.xla_cpu.huge_pages import use_huge_pages

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("workdir", None, "a trained transformer (dalle) workdir")
    flags.DEFINE_string("dvae_workdir", None, "the dVAE that decodes codes (default: the one that "
                        "encoded the transformer's training data)")
    flags.DEFINE_string("clip_workdir", None, "a trained CLIP workdir to score samples")
    flags.DEFINE_multi_string("prompt", [], "a text prompt (repeatable)")
    flags.DEFINE_string("prompts_file", None, "a file with one prompt per line")
    flags.DEFINE_integer("num_samples", 8, "samples per prompt")
    flags.DEFINE_integer("rerank", 0, "keep the best K samples per prompt by CLIP score (0: all)")
    define_sampling_flags()
    flags.DEFINE_string("complete", None, "an image whose first rows are kept (completion)")
    flags.DEFINE_integer("keep_rows", 0, "code rows of --complete to keep")
    flags.DEFINE_integer("seed", 0, "random seed")
    flags.DEFINE_integer("batch_size", 8, "(prompt, sample) rows per jitted batch")
    flags.DEFINE_string("out", "samples.png", "PNG grid to write (and OUT.json with the scores)")
    flags.DEFINE_string("mesh", "data:-1", "AXIS:SIZE,… the transformer's EMA is split over by its "
                        "rules (e.g. fsdp:4 for a model too large for one device)")
    flags.mark_flags_as_required(["workdir"])


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    """The prompts of --prompt and of --prompts_file (blank lines skipped), in order."""
    out = list(prompts)
    if prompts_file:
        path = epath.Path(prompts_file)
        if not path.exists():
            raise FileNotFoundError(f"no prompts file at {prompts_file}")
        out += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not out:
        raise ValueError("no prompt: give --prompt=TEXT or --prompts_file=FILE")
    return out


def completion_prefix(gen, path: str, keep_rows: int, count: int) -> tuple[np.ndarray, int]:
    """(codes (count, g, g) of the image at `path`, number of codes to keep)."""
    from PIL import Image

    from dalle_jax.data.imaging import resize_center_crop

    if not epath.Path(path).exists():
        raise FileNotFoundError(f"no image at {path}")
    if not 0 <= keep_rows <= gen.grid:
        raise ValueError(f"keep_rows={keep_rows} must be in [0, {gen.grid}] (the code grid's rows)")
    resolution = gen.codec.config.data.resolution
    with epath.Path(path).open("rb") as f:
        image = resize_center_crop(Image.open(f).convert("RGB"), resolution)
    codes = gen.encode_image(image[None])
    return np.repeat(codes, count, axis=0), keep_rows * gen.grid


def generate(*, workdir: str, prompts: list[str], out: str, num_samples: int = 8,
             rerank: int = 0, settings=None, seed: int = 0, clip_workdir: str | None = None,
             dvae_workdir: str | None = None, complete: str | None = None, keep_rows: int = 0,
             batch_size: int = 8, mesh: str = "data:-1") -> dict:
    """Samples, scores and writes the grid `out` and its JSON; returns the JSON record.

    The command line's work, callable from Python (the quickstart and the notebook use it).
    """
    from dalle_jax import visualize
    from dalle_jax.data import pipeline
    from dalle_jax.generation.generator import Generator, encode_prompts
    from dalle_jax.generation.rerank import Reranker, top_k
    from dalle_jax.generation.sampling import Settings
    from dalle_jax.parallel import hosts
    from dalle_jax.parallel.mesh import parse_axes
    from dalle_jax.training import checkpoint

    settings = settings or Settings()
    if rerank and not clip_workdir:
        raise ValueError("--rerank needs --clip_workdir (the model that scores samples)")
    if rerank < 0 or rerank > num_samples:
        raise ValueError(f"--rerank={rerank} must be in [0, --num_samples={num_samples}]")
    config = checkpoint.load_config(workdir)  # cheap checks first, before any model is built
    if complete and not epath.Path(complete).exists():
        raise FileNotFoundError(f"no image at {complete}")
    if complete and not 0 <= keep_rows <= config.model.grid:
        raise ValueError(f"keep_rows={keep_rows} must be in [0, {config.model.grid}] (the code "
                         "grid's rows)")
    settings.check(config.model.image_vocab)
    tokenizer = pipeline.ensure_tokenizer(config, workdir)
    text = encode_prompts(tokenizer, config.model.text_len, prompts)
    gen = Generator.load(workdir, dvae_workdir=dvae_workdir, tokenizer=tokenizer,
                         mesh_axes=parse_axes(mesh))
    ranker = Reranker.load(clip_workdir) if clip_workdir else None
    prefix, keep = (completion_prefix(gen, complete, keep_rows, len(prompts))
                    if complete else (None, 0))
    codes = gen.sample(text, num_samples, seed=seed, settings=settings, batch_size=batch_size,
                       prefix=prefix, keep=keep)
    images = gen.decode(codes)  # (P, N, H, W, 3)
    samples, shown, labels = [], [], []
    shown_per_prompt = rerank or num_samples
    for p, prompt in enumerate(prompts):
        scores = ranker.scores(images[p], prompt) if ranker else None
        order = top_k(scores, shown_per_prompt) if ranker else np.arange(num_samples)
        rank = {int(i): r for r, i in enumerate(top_k(scores, num_samples))} if ranker else {}
        for i in range(num_samples):
            samples.append({"prompt": prompt, "sample": i,
                            "score": float(scores[i]) if ranker else None,
                            "rank": rank.get(i), "in_grid": bool(i in order)})
        for i in order:
            shown.append(images[p, i])
            labels.append(prompt + (f" ({scores[i]:.3f})" if ranker else ""))
    record = {"workdir": workdir, "step": gen.step, "grid": out, "settings": settings._asdict(),
              "seed": seed, "clip_workdir": clip_workdir, "complete": complete,
              "keep_rows": keep_rows if complete else 0, "samples": samples}
    if hosts.is_primary():  # on a pod every host samples alike; the first one writes
        visualize.save_grid(np.stack(shown), labels, out, columns=shown_per_prompt)
        epath.Path(os.path.splitext(out)[0] + ".json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str]) -> None:
    """Parses flags and runs; errors are one line on stderr."""
    _define_flags()
    parse_flags("python -m dalle_jax.sample", argv)
    join_hosts()
    from dalle_jax.generation.sampling import Settings

    f = FLAGS
    try:
        record = generate(
            workdir=f.workdir, prompts=read_prompts(f.prompt, f.prompts_file), out=f.out,
            num_samples=f.num_samples, rerank=f.rerank,
            settings=Settings(**sampling_settings()), seed=f.seed,
            clip_workdir=f.clip_workdir, dvae_workdir=f.dvae_workdir, complete=f.complete,
            keep_rows=f.keep_rows, batch_size=f.batch_size, mesh=f.mesh)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print(json.dumps({"grid": record["grid"], "samples": len(record["samples"])}))


if __name__ == "__main__":
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])
