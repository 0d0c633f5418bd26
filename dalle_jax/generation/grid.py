"""Samples for text prompts, scored and written: a PNG grid and its JSON beside it.

`generate` is the work of `python -m dalle_jax.sample`, callable from Python (the quickstart's last
stage and the notebook use it): it restores the transformer, its dVAE and (optionally) a CLIP
model, draws `num_samples` per prompt, scores them, and writes the grid (one row per prompt, the
`rerank` best only when asked) and a JSON record of every sample's prompt, index, score and rank.
With `judge`, each sample of a `shapes` prompt is also judged by the caption checker
(`evaluation.shapes_eval.judge_samples`): `passes` per sample and `shown_pass_rate`, the share of
the grid's samples that show their prompt. On a pod every host samples alike and the first one
writes.
"""

from __future__ import annotations

import json
import os

import numpy as np
from etils import epath


def completion_prefix(gen, path: str, keep_rows: int, count: int) -> tuple[np.ndarray, int]:
    """(codes (count, g, g) of the image at `path`, number of codes to keep)."""
    from PIL import Image

    from dalle_jax.data.imaging import resize_center_crop

    if not epath.Path(path).exists():
        raise FileNotFoundError(f"no image at {path}")
    if not 0 <= keep_rows <= gen.grid:
        raise ValueError(f"keep_rows={keep_rows} must be in [0, {gen.grid}] (the code grid's rows)")
    resolution = gen.grid * gen.dvae.grid_scale
    with epath.Path(path).open("rb") as f:
        image = resize_center_crop(Image.open(f).convert("RGB"), resolution)
    codes = gen.encode_image(image[None])
    return np.repeat(codes, count, axis=0), keep_rows * gen.grid


def generate(*, workdir: str, prompts: list[str], out: str, num_samples: int = 8,
             rerank: int = 0, settings=None, seed: int = 0, clip_workdir: str | None = None,
             dvae_workdir: str | None = None, complete: str | None = None, keep_rows: int = 0,
             batch_size: int = 8, mesh: str = "data:-1", judge: bool = False) -> dict:
    """Samples, scores and writes the grid `out` and its JSON; returns the JSON record.
    `judge` checks each sample against its `shapes` prompt (the shape classifier is kept in the
    transformer workdir's `eval/`)."""
    from dalle_jax import visualize
    from dalle_jax.data import pipeline
    from dalle_jax.generation.generator import Generator, encode_prompts
    from dalle_jax.generation.rerank import load_ranker, top_k
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
    ranker = load_ranker(clip_workdir) if clip_workdir else None
    prefix, keep = (completion_prefix(gen, complete, keep_rows, len(prompts))
                    if complete else (None, 0))
    codes = gen.sample(text, num_samples, seed=seed, settings=settings, batch_size=batch_size,
                       prefix=prefix, keep=keep)
    images = gen.decode(codes)  # (P, N, H, W, 3)
    passes = None
    if judge:
        from dalle_jax.evaluation import shapes_eval

        passes = shapes_eval.judge_samples(images, prompts,
                                           shapes_eval.default_classifier_path(workdir))
    samples, shown, labels = [], [], []
    shown_per_prompt = rerank or num_samples
    for p, prompt in enumerate(prompts):
        scores = ranker.scores(images[p], prompt) if ranker else None
        order = top_k(scores, shown_per_prompt) if ranker else np.arange(num_samples)
        rank = {int(i): r for r, i in enumerate(top_k(scores, num_samples))} if ranker else {}
        for i in range(num_samples):
            samples.append({"prompt": prompt, "sample": i,
                            "score": float(scores[i]) if ranker else None,
                            "rank": rank.get(i), "in_grid": bool(i in order),
                            **({"passes": bool(passes[p, i])} if judge else {})})
        for i in order:
            shown.append(images[p, i])
            labels.append(prompt + (f" ({scores[i]:.3f})" if ranker else ""))
    record = {"workdir": workdir, "step": gen.step, "grid": out, "settings": settings._asdict(),
              "seed": seed, "clip_workdir": clip_workdir, "complete": complete,
              "keep_rows": keep_rows if complete else 0, "samples": samples}
    if judge:
        in_grid = [s["passes"] for s in samples if s["in_grid"]]
        record["shown_pass_rate"] = float(np.mean(in_grid))
        record["pass_rate"] = float(passes.mean())
    if hosts.is_primary():  # on a pod every host samples alike; the first one writes
        visualize.save_grid(np.stack(shown), labels, out, columns=shown_per_prompt)
        epath.Path(os.path.splitext(out)[0] + ".json").write_text(json.dumps(record, indent=1))
    return record
