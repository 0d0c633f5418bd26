"""The caption checker: parses every caption template, passes real scenes, fails wrong captions."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from dalle_jax.data.shapes import render, scenes, styles
from dalle_jax.data.shapes.vocabulary import SHAPES
from dalle_jax.data.shapes import caption_parser
from dalle_jax.evaluation import judge, shape_classifier, shapes_eval


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    """Where the module's classifier is saved (trained once; the evaluations read it back)."""
    path = str(tmp_path_factory.mktemp("judge") / "classifier.npz")
    shape_classifier.load_or_train(path)
    return path


@pytest.fixture(scope="module")
def classifier(classifier_path):
    params = shape_classifier.load_or_train(classifier_path)
    again = shape_classifier.load_or_train(classifier_path)  # read back from the file
    for k in params:
        np.testing.assert_array_equal(params[k], again[k])
    return params


def _scenes(count, seed=0, variant="objects", resolution=64):
    rng = np.random.default_rng(seed)
    style = styles.STYLES[variant]
    for _ in range(count):
        scene = scenes.sample_objects_scene(rng, frozenset(), False, style)
        yield scene, scenes.objects_caption(scene, rng), render.render_objects(
            scene, resolution, rng, style)


def test_parser_reads_every_template_back():
    for scene, caption, _ in _scenes(2000):
        request = caption_parser.parse(caption)
        assert len(request.objects) == len(scene["objects"])
        for wanted, obj in zip(request.objects, scene["objects"]):
            assert (wanted.colour, wanted.shape) == (obj["colour"], obj["shape"]), caption
            assert wanted.size in (None, obj["size"]) and wanted.position in (None, obj["position"])
        assert request.relation == (scene["relation"] if len(scene["objects"]) == 2 else None)
    for bad in ("a cat on a mat", "a red", "a red circle and a blue square"):
        with pytest.raises(ValueError, match="caption"):
            caption_parser.parse(bad)


def test_classifier_reads_rendered_outlines(classifier):
    assert shape_classifier.accuracy(classifier, count=500) > 0.65  # blurred and speckled ones


@pytest.mark.parametrize("variant,resolution", [("objects", 64), ("bold", 72)])
def test_real_scenes_pass_and_wrong_captions_fail(classifier, variant, resolution):
    passed, wrong_colour, wrong_place, read_right = [], [], [], []
    for scene, caption, image in _scenes(150, seed=1, variant=variant, resolution=resolution):
        request = caption_parser.parse(caption)
        judgement = judge.judge(image, request, classifier)
        passed.append(judgement["all"])
        read_right.append(judgement["read"] == tuple(o["shape"] for o in scene["objects"]))
        assert judgement["shape"] == read_right[-1] or not judgement["colour"]
        first = request.objects[0]
        others = [c for c in ("red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan",
                              "brown") if c not in {o["colour"] for o in scene["objects"]}]
        recoloured = dataclasses.replace(request, objects=(
            dataclasses.replace(first, colour=others[0]),) + request.objects[1:])
        wrong_colour.append(judge.judge(image, recoloured, classifier)["colour"])
        if request.relation:
            flipped = {"left of": "right of", "right of": "left of", "above": "below",
                       "below": "above"}[request.relation]
            moved = dataclasses.replace(request, relation=flipped)
            if request.objects[0].colour != request.objects[1].colour:
                wrong_place.append(judge.judge(image, moved, classifier)["position"])
    assert np.mean(passed) >= 0.95 and np.mean(read_right) >= 0.95
    assert not any(wrong_colour)
    assert wrong_place and not any(wrong_place)


def test_judge_samples_passes_true_scenes_and_fails_other_prompts(classifier_path):
    """`judge_samples`, as `sample --judge` and the quickstart use it: (P, N) verdicts."""
    drawn = list(_scenes(6, seed=4, variant="bold", resolution=72))
    images = np.stack([image for _, _, image in drawn])[None]  # one prompt, six samples
    own = shapes_eval.judge_samples(images[:, :1], [drawn[0][1]], classifier_path)
    assert own.shape == (1, 1) and own[0, 0]
    wrong = "a brown star" if "brown" not in drawn[0][1] else "a pink star"
    assert not shapes_eval.judge_samples(images, [wrong], classifier_path).any()
    with pytest.raises(ValueError, match="caption"):
        shapes_eval.judge_samples(images, ["a cat on a mat"], classifier_path)


def test_shares_count_each_named_object_by_its_shape():
    parse = caption_parser.parse
    requests = [parse("a red circle"), parse("a blue star left of a red circle"),
                parse("a green star")]
    judgements = [
        {"colour": True, "shape": True, "position": None, "all": True, "read": ("circle",)},
        {"colour": True, "shape": False, "position": True, "all": False,
         "read": ("heart", "circle")},
        {"colour": False, "shape": False, "position": None, "all": False, "read": (None,)},
    ]
    shares = shapes_eval._shares(judgements, requests)
    assert shares["count"] == 3 and shares["all"] == pytest.approx(1 / 3)
    assert shares["position"] == 1.0  # the one caption that names a place
    assert shares["by_shape"] == {"circle": 1.0, "star": 0.0}
    with pytest.raises(ValueError):  # a judgement per request, an object per reading
        shapes_eval._shares(judgements, requests[:2])


def test_evaluate_a_tiny_transformer_with_and_without_rerank(tiny_dalle, tiny_clip, classifier_path):
    from dalle_jax.generation.generator import Generator
    from dalle_jax.generation.rerank import Reranker

    gen = Generator.load(tiny_dalle)
    record = shapes_eval.evaluate(gen, split="validation", num_captions=3,
                                  ranker=Reranker.load(tiny_clip), rerank_from=2,
                                  classifier_path=classifier_path, loss_batches=1)
    for key in ("without_rerank", "with_rerank", "reconstructions"):
        shares = record[key]
        assert shares["count"] == 3
        assert all(shares[k] is None or 0 <= shares[k] <= 1 for k in shapes_eval.CHECKS)
        assert set(shares["by_shape"]) <= set(SHAPES) and shares["by_shape"]
    reranked = record["with_rerank"]
    assert reranked["rerank_from"] == 2
    # A pick among the samples can do no better than the best of them, and no worse than none;
    # 3 captions × 2 samples give shares in steps of 1/6 and 1/3.
    assert 0 <= reranked["sample_mean"] <= reranked["oracle"] <= 1
    assert max(reranked["all"], record["without_rerank"]["all"]) <= reranked["oracle"]
    assert round(reranked["sample_mean"] * 6, 6).is_integer()
    assert round(reranked["oracle"] * 3, 6).is_integer()
    assert set(reranked["score_auc"]) == {"all", "colour", "shape_given_colour",
                                          "position_given_colour"}
    assert all(v is None or 0 <= v <= 1 for v in reranked["score_auc"].values())
    assert record["loss"]["bits_per_image_token"] > 0


def test_evaluate_draws_with_the_settings_it_is_given(tiny_dalle, classifier_path, monkeypatch):
    from dalle_jax.evaluate import evaluate_dalle

    monkeypatch.setattr(shapes_eval, "default_classifier_path", lambda workdir: classifier_path)
    record = evaluate_dalle(tiny_dalle, "validation", 1, clip_workdir=None, num_captions=2,
                            rerank_from=2, seed=0, temperature=0.8, top_k=5, top_p=0.9,
                            guidance=2.5)
    assert record["settings"] == {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "guidance": 2.5}
    assert record["without_rerank"]["count"] == 2
    with pytest.raises(ValueError, match="guidance"):
        evaluate_dalle(tiny_dalle, "validation", 1, clip_workdir=None, num_captions=2,
                       rerank_from=2, seed=0, temperature=1.0, top_k=0, guidance=-1.0)


class _IdentityCodec:
    """Stands in for a perfect tokenizer: decode(encode(x)) = x."""

    def __init__(self, config):
        self.config = config

    def encode(self, images):
        return images

    def decode(self, images):
        return images.astype(np.float32) / 255.0


def test_dvae_reconstructions_are_judged_against_their_captions(tiny_dvae, classifier_path):
    from dalle_jax.evaluate import evaluate_dvae
    from dalle_jax.training import checkpoint

    _, workdir = tiny_dvae
    config = checkpoint.load_config(workdir)
    perfect = shapes_eval.judge_reconstructions(_IdentityCodec(config), "validation", 16,
                                                classifier_path)
    assert perfect["count"] == 16 and perfect["all"] >= 0.8, perfect
    assert np.mean(list(perfect["by_shape"].values())) >= 0.8, perfect
    saved = shapes_eval.default_classifier_path(workdir)  # the classifier evaluate reads
    os.makedirs(os.path.dirname(saved), exist_ok=True)
    shutil.copy(classifier_path, saved)
    record = evaluate_dvae(workdir, "validation", 1, num_judged=4)
    assert record["checker"]["count"] == 4
    assert all(record["checker"][k] is None or 0 <= record["checker"][k] <= 1
               for k in shapes_eval.CHECKS)
    assert "checker" not in evaluate_dvae(workdir, "validation", 1)


def test_ranking_auc_counts_passing_samples_outscoring_failing_ones_within_each_caption():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 1.0, 5.0]])
    passed = np.array([[True, False, True, None], [True, False, True, True]], object)
    # Caption 0: pass 3 and 1 against fail 2: 1 of 2 pairs. Caption 1: pass 0, 1, 5 against
    # fail 1: 0, a tie (half) and 1. Pooled: (1 + 1.5) / 5.
    assert shapes_eval.ranking_auc(scores, passed) == pytest.approx(2.5 / 5)
    # `among` leaves samples out; a caption with only passing or only failing ones adds nothing.
    among = np.array([[True, True, False, True], [True, True, True, False]])
    assert shapes_eval.ranking_auc(scores, passed, among) == pytest.approx(1.5 / 3)
    # A plain bool array works too: sample 3 of caption 0 now fails, below both passing ones.
    assert shapes_eval.ranking_auc(scores, passed == True) == pytest.approx(4.5 / 7)  # noqa: E712
    assert shapes_eval.ranking_auc(scores[:1], np.array([[None, True, True, None]], object)) is None


class _TableDecoder:
    """A stand-in generator whose dVAE 'decodes' a grid to the scene its first code names."""

    grid = 3

    def __init__(self, images):
        self.images = images
        self.model = type("Model", (), {"image_vocab": len(images)})()

    def decode(self, codes):
        return self.images[codes[..., 0, 0]]


def test_judge_codes_judges_another_models_grids(classifier_path):
    """`judge_codes`, as experiments/peer/judge_codes.py judges the peer's samples."""
    drawn = list(_scenes(4, seed=5, variant="bold", resolution=72))
    gen = _TableDecoder(np.stack([image for _, _, image in drawn]))
    captions = [caption for _, caption, _ in drawn[:2]]
    # Caption 0 gets its own scene then scene 2's; caption 1 gets scene 3's twice: flat rows.
    codes = np.zeros((2, 2, 9), np.int32)
    codes[0, 0], codes[0, 1], codes[1] = 0, 2, 3
    record = shapes_eval.judge_codes(gen, captions, codes, classifier_path)
    own = shapes_eval.judge_samples(gen.images[[[0, 2], [3, 3]]], captions, classifier_path)
    assert record["samples_per_caption"] == 2 and record["first"]["count"] == 2
    assert record["first"]["all"] == pytest.approx(np.mean(own[:, 0]))
    assert record["sample_mean"] == pytest.approx(own.mean()) and own[0, 0]
    with pytest.raises(ValueError, match="shape"):
        shapes_eval.judge_codes(gen, captions[:1], codes, classifier_path)
    with pytest.raises(ValueError, match="outside"):
        shapes_eval.judge_codes(gen, captions, codes + 4, classifier_path)
