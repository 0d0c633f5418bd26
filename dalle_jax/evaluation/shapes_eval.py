"""`evaluate` for a transformer trained on `shapes`: do its samples show their captions?

For the first `num_captions` captions of a split, one sample per caption is judged (colour, shape,
position: `judge`), and, given a CLIP workdir, the best of `rerank_from` samples by CLIP score is
judged too, beside the share of all those samples that pass (`sample_mean`: a random pick) and of
captions with at least one passing sample (`oracle`: a perfect reranker), and `score_auc`: per
check, how well the CLIP scores order that caption's samples by it (`ranking_auc`; 0.5 is blind).
The split's validation
loss (text and image cross-entropy, bits per image token) of the same parameters comes with it,
and so does the checker's ceiling: the share of the split's own scenes that pass once encoded and
decoded by the dVAE (`reconstructions`), which no sample can be expected to beat.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from dalle_jax.data import pipeline
from dalle_jax.data.shapes import caption_parser
from dalle_jax.evaluation import judge, shape_classifier
from dalle_jax.generation.sampling import Settings
from dalle_jax.parallel.partitioning import replicated

CHECKS = ("colour", "shape", "position", "all")


def _shares(judgements: list[dict], requests: list) -> dict:
    """Share of True per check, over the judgements where the check applies; and `by_shape`:
    per shape the captions name, the share of such objects whose outline was read as that shape
    (an object whose colour is missing counts as misread)."""
    out = {}
    for k in CHECKS:
        values = [j[k] for j in judgements if j[k] is not None]
        out[k] = float(np.mean(values)) if values else None
    out["count"] = len(judgements)
    right: dict[str, list[bool]] = {}
    for j, request in zip(judgements, requests, strict=True):
        for wanted, read in zip(request.objects, j["read"], strict=True):
            right.setdefault(wanted.shape, []).append(read == wanted.shape)
    out["by_shape"] = {s: float(np.mean(v)) for s, v in sorted(right.items())}
    return out


def ranking_auc(scores: np.ndarray, passed: np.ndarray, among: np.ndarray | None = None
                ) -> float | None:
    """Within each caption (row), the chance that a sample passing a check outscores one failing
    it (ties count half), pooled over all such pairs of all captions: 0.5 for scores blind to the
    check, 1 for scores that put every passing sample first. `scores` (P, N) floats, `passed`
    (P, N): True, False or None (the check does not apply); only samples where `among` is True
    take part. None when no caption has both a passing and a failing sample."""
    scores = np.asarray(scores, np.float64)
    among = np.ones(scores.shape, bool) if among is None else np.asarray(among, bool)
    wins = pairs = 0.0
    for s, ok, take in zip(scores, passed, among, strict=True):
        good = s[[o is not None and bool(o) and t for o, t in zip(ok, take)]]
        bad = s[[o is not None and not o and t for o, t in zip(ok, take)]]
        diff = good[:, None] - bad[None, :]
        wins += np.sum(diff > 0) + 0.5 * np.sum(diff == 0)
        pairs += diff.size
    return float(wins / pairs) if pairs else None


def _score_aucs(scores: np.ndarray, every: list[list[dict]]) -> dict:
    """`ranking_auc` of the scores for `all` and `colour`, and for shape and position among the
    samples whose colours are right (the checks a reranker has to add beyond colour)."""
    passed = {k: np.array([[j[k] for j in row] for row in every], object) for k in CHECKS}
    colour_ok = passed["colour"] == True  # noqa: E712 (an object array of True/False/None)
    return {"all": ranking_auc(scores, passed["all"]),
            "colour": ranking_auc(scores, passed["colour"]),
            "shape_given_colour": ranking_auc(scores, passed["shape"], colour_ok),
            "position_given_colour": ranking_auc(scores, passed["position"], colour_ok)}


def _first_caption(value) -> str:
    """The first line of a record's caption field (bytes or str)."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.split("\n")[0]


def split_loss(gen, split: str, num_batches: int | None) -> dict[str, float]:
    """Mean text/image cross-entropy and bits per image token of the generator's parameters,
    over global batches on its mesh (each host reads its own rows, every host gets the mean)."""
    from dalle_jax.training import loop
    from dalle_jax.training.dalle.loss import dalle_loss

    config = gen.config
    loader = pipeline.make_loader(config, split, gen.tokenizer, mesh=gen.mesh, num_epochs=1,
                                  shuffle=False)
    weights = dict(text_weight=config.loss.text_weight, image_weight=config.loss.image_weight)
    step = jax.jit(lambda text, codes: dalle_loss(gen.model, text, codes, **weights)[1],
                   out_shardings=replicated(gen.mesh))
    try:
        return loop.mean_over_batches(lambda b: step(b["text"], b["codes"]), loader,
                                      num_batches or 10**9)
    finally:
        loader.close()


def examples_of(config, split: str, count: int) -> tuple[list[str], np.ndarray | None]:
    """The first `count` captions of a split of the transformer's (encoded) dataset, and their
    code grids (count, g·g) when the dataset holds codes, else None."""
    from dalle_jax.data.sources import open_split

    data = config.data
    source = open_split(data.dataset, data.data_dir, split, data.config or None)
    captions, codes = [], []
    for i in range(min(count, len(source))):
        example = source[i]
        captions.append(_first_caption(example[data.caption_key]))
        if "codes" in example:
            codes.append(np.asarray(example["codes"], np.int32).reshape(-1))
    return captions, (np.stack(codes) if codes and len(codes) == len(captions) else None)


def captions_of(config, split: str, count: int) -> list[str]:
    """The first `count` captions of a split of the transformer's (encoded) dataset."""
    return examples_of(config, split, count)[0]


def evaluate(gen, *, split: str, num_captions: int, ranker=None, rerank_from: int = 32,
             seed: int = 0, settings: Settings = Settings(), batch_size: int = 8,
             classifier_path: str | None = None, loss_batches: int | None = None) -> dict:
    """The JSON record of `python -m dalle_jax.evaluate` for a transformer workdir."""
    classifier = shape_classifier.load_or_train(classifier_path)
    captions, true_codes = examples_of(gen.config, split, num_captions)
    if not captions:
        raise ValueError(f"split {split!r} has no caption")
    requests = [caption_parser.parse(c) for c in captions]
    record = {"split": split, "captions": len(captions), "settings": settings._asdict()}
    if true_codes is not None:  # the ceiling: the dVAE's decodes of the scenes' own codes
        decoded = gen.decode(true_codes.reshape(-1, gen.grid, gen.grid))
        record["reconstructions"] = _shares(
            [judge.judge(decoded[p], r, classifier) for p, r in enumerate(requests)], requests)
    text = gen.encode_prompts(captions)
    per_caption = rerank_from if ranker else 1
    codes = gen.sample(text, per_caption, seed=seed, settings=settings, batch_size=batch_size)
    images = gen.decode(codes)  # (P, N, H, W, 3)
    every = _judge_grid(images, requests, classifier)
    record["without_rerank"] = _shares([row[0] for row in every], requests)
    if ranker:
        scores = np.stack([ranker.scores(images[p], c) for p, c in enumerate(captions)])
        reranked = [row[int(b)] for row, b in zip(every, np.argmax(scores, axis=1))]
        record["with_rerank"] = dict(
            _shares(reranked, requests), rerank_from=rerank_from,
            # what a random pick of the N samples scores, and a perfect reranker's ceiling
            sample_mean=float(np.mean([j["all"] for row in every for j in row])),
            oracle=float(np.mean([any(j["all"] for j in row) for row in every])),
            score_auc=_score_aucs(scores, every))
    record["loss"] = split_loss(gen, split, loss_batches)
    return record


def _judge_grid(images: np.ndarray, requests: list, classifier: dict) -> list[list[dict]]:
    """The checker's verdicts on every sample `images[p, n]` of every request p."""
    return [[judge.judge(image, r, classifier) for image in row]
            for row, r in zip(images, requests, strict=True)]


def judge_codes(gen, captions: list[str], codes: np.ndarray,
                classifier_path: str | None = None) -> dict:
    """Checker shares of code grids drawn by any model for `captions`, decoded by the generator's
    dVAE: `codes` (P, N, g·g) or (P, N, g, g). `first`: the first sample of each caption;
    `sample_mean`: the share of all P·N samples passing every check (a random pick)."""
    codes = np.asarray(codes)
    if codes.ndim == 3:
        codes = codes.reshape(*codes.shape[:2], gen.grid, gen.grid)
    if codes.ndim != 4 or codes.shape[0] != len(captions) or codes.shape[2:] != (gen.grid,) * 2:
        raise ValueError(f"codes of shape {codes.shape}: expected ({len(captions)}, N, "
                         f"{gen.grid}, {gen.grid}) or ({len(captions)}, N, {gen.grid ** 2})")
    if codes.min() < 0 or codes.max() >= gen.model.image_vocab:
        raise ValueError(f"codes in [{codes.min()}, {codes.max()}] are outside the dVAE's "
                         f"{gen.model.image_vocab} codes")
    requests = [caption_parser.parse(c) for c in captions]
    every = _judge_grid(gen.decode(codes), requests,
                        shape_classifier.load_or_train(classifier_path))
    return {"first": _shares([row[0] for row in every], requests),
            "sample_mean": float(np.mean([j["all"] for row in every for j in row])),
            "samples_per_caption": int(codes.shape[1])}


def judge_samples(images: np.ndarray, prompts: list[str],
                  classifier_path: str | None = None) -> np.ndarray:
    """(P, N) bool: whether each uint8 sample `images[p, n]` (P, N, H, W, 3) passes every check
    of `prompts[p]`; a ValueError names a prompt the `shapes` caption grammar cannot read."""
    classifier = shape_classifier.load_or_train(classifier_path)
    requests = [caption_parser.parse(p) for p in prompts]
    return np.array([[j["all"] for j in row] for row in _judge_grid(images, requests, classifier)],
                    bool)


def judge_reconstructions(dvae, split: str, count: int, classifier_path: str | None = None) -> dict:
    """Checker pass shares of a stage-1 model's reconstructions of a `shapes` split's first
    `count` scenes (encoded and decoded once): the ceiling any transformer on these codes meets."""
    from PIL import Image

    from dalle_jax.data.imaging import resize_center_crop

    data = dvae.config.data
    source = pipeline.open_split(data, split)
    classifier = shape_classifier.load_or_train(classifier_path)
    n = min(count, len(source))
    if n == 0:
        raise ValueError(f"split {split!r} has no scene to judge")
    examples = [source[i] for i in range(n)]
    images = np.stack([resize_center_crop(Image.fromarray(np.asarray(e[data.image_key])),
                                          data.resolution) for e in examples])
    decoded = (np.clip(dvae.decode(dvae.encode(images)), 0, 1) * 255).round().astype(np.uint8)
    judgements, requests = [], []
    for image, e in zip(decoded, examples):
        requests.append(caption_parser.parse(_first_caption(e[data.caption_key])))
        judgements.append(judge.judge(image, requests[-1], classifier))
    return _shares(judgements, requests)


def default_classifier_path(workdir: str) -> str:
    """Where a workdir's evaluation keeps the shape classifier."""
    return os.path.join(workdir, "eval", "shape_classifier.npz")
