"""The reranker: InfoNCE against a numpy reference, retrieval with repeated captions, training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dalle_jax.data import hard_negatives
from dalle_jax.models.clip import Clip
from dalle_jax.text_ids import PAD_ID
from dalle_jax.training.clip import trainer as clip_trainer
from dalle_jax.training.clip.loss import clip_loss
from tests.helpers.configs import load


def _batch(model, b=6, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    images = jax.random.randint(k1, (b, model.resolution, model.resolution, 3), 0, 256).astype(jnp.uint8)
    text = jax.random.randint(k2, (b, model.text_len), 1, model.text_vocab)
    return images, text.at[:, 5:].set(PAD_ID)


def test_loss_matches_a_numpy_reference_and_embeddings_are_unit():
    model = Clip.from_config(load("clip", "tiny").model)
    images, text = _batch(model)
    loss, aux = clip_loss(model, images, text)
    ei, et = np.asarray(model.image_embedding(images)), np.asarray(model.text_embedding(text))
    np.testing.assert_allclose(np.linalg.norm(ei, axis=1), 1, rtol=1e-5)
    logits = np.exp(float(model.logit_scale[...])) * ei @ et.T

    def ce(z):
        z = z - z.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - np.diag(z))
    np.testing.assert_allclose(float(loss), (ce(logits) + ce(logits.T)) / 2, rtol=1e-4)
    np.testing.assert_allclose(float(aux["temperature"]), 0.07, rtol=1e-5)
    with pytest.raises(ValueError, match="stem_channels must be ≥ 0, got -1"):
        Clip.from_config(load("clip", "tiny", **{"model.stem_channels": -1}).model)


def test_conv_stem_halves_log2_patch_times_and_sees_only_its_neighbourhood():
    config = load("clip", "tiny", **{"model.stem_channels": 4}).model  # 32 px, patch 8
    model = Clip.from_config(config)
    assert [c.w.shape for c in model.stem] == [(3, 3, 3, 4), (3, 3, 4, 8), (3, 3, 8, 16)]
    assert [c.stride for c in model.stem] == [2, 2, 2]
    assert model.patch_embed.shape == (16, config.width)
    x = jnp.asarray(_batch(model, b=2)[0], jnp.float32) / 255
    feats = x * 2 - 1
    for conv in model.stem:
        feats = jax.nn.relu(conv(feats))
    assert feats.shape == (2, 4, 4, 16)  # one token per 8 × 8 patch
    # Three stride-2 3×3 convolutions: token (0, 0) sees pixels 0…14 (15 across), not pixel 15.
    bumped = np.asarray(x).copy()
    bumped[:, 15, 15] = 1 - bumped[:, 15, 15]
    again = jnp.asarray(bumped) * 2 - 1
    for conv in model.stem:
        again = jax.nn.relu(conv(again))
    np.testing.assert_array_equal(np.asarray(again)[:, 0, 0], np.asarray(feats)[:, 0, 0])
    assert not np.array_equal(np.asarray(again)[:, 1, 1], np.asarray(feats)[:, 1, 1])
    with pytest.raises(ValueError, match="patch must be a power of 2 ≥ 2, got 12"):
        Clip.from_config(load("clip", "tiny", **{"model.stem_channels": 4, "model.patch": 12,
                                                 "model.resolution": 36}).model)


def test_hard_negatives_add_image_to_caption_columns_against_a_numpy_reference():
    model = Clip.from_config(load("clip", "tiny").model)
    images, text = _batch(model)
    _, negative = _batch(model, seed=1)
    negative = negative.at[2].set(PAD_ID)  # image 2 has no negative: its column is left out
    loss, aux = clip_loss(model, images, text, negative)
    ei = np.asarray(model.image_embedding(images))
    et, en = np.asarray(model.text_embedding(text)), np.asarray(model.text_embedding(negative))
    scale = np.exp(float(model.logit_scale[...]))
    logits, negative_logits = scale * ei @ et.T, scale * ei @ en.T

    def ce(z):
        z = z - z.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - np.diag(z))
    wide = np.concatenate([logits, np.delete(negative_logits, 2, axis=1)], axis=1)
    np.testing.assert_allclose(float(loss), (ce(wide) + ce(logits.T)) / 2, rtol=1e-4)
    has = np.arange(6) != 2
    expected = np.mean((np.diag(logits) > np.diag(negative_logits))[has])
    np.testing.assert_allclose(float(aux["negative_accuracy"]), expected)
    # Without negatives the loss is the plain symmetric one, and it is lower than with them.
    assert float(clip_loss(model, images, text)[0]) < float(loss)


def test_negative_images_add_caption_to_image_columns_against_a_numpy_reference():
    model = Clip.from_config(load("clip", "tiny").model)
    images, text = _batch(model)
    negative_images, _ = _batch(model, seed=2)
    has = np.arange(6) != 4  # caption 4 has no negative image: its column is left out
    loss, aux = clip_loss(model, images, text, negative_images=negative_images,
                          has_negative_image=jnp.asarray(has))
    ei = np.asarray(model.image_embedding(images))
    en = np.asarray(model.image_embedding(negative_images))
    et = np.asarray(model.text_embedding(text))
    scale = np.exp(float(model.logit_scale[...]))
    logits, negative_logits = scale * et @ ei.T, scale * et @ en.T  # captions × images

    def ce(z):
        z = z - z.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - np.diag(z))
    wide = np.concatenate([logits, np.delete(negative_logits, 4, axis=1)], axis=1)
    np.testing.assert_allclose(float(loss), (ce(logits.T) + ce(wide)) / 2, rtol=1e-4)
    expected = np.mean((np.diag(logits) > np.diag(negative_logits))[has])
    np.testing.assert_allclose(float(aux["negative_image_accuracy"]), expected)
    # `in_batch_loss` leaves every negative out: it is the plain loss.
    plain = float(clip_loss(model, images, text)[0])
    np.testing.assert_allclose(float(aux["in_batch_loss"]), plain, rtol=1e-5)
    assert plain < float(loss)


def test_bfloat16_towers_follow_the_float32_ones():
    f32 = Clip.from_config(load("clip", "tiny", **{"model.stem_channels": 4}).model)
    bf16 = Clip.from_config(load("clip", "tiny", **{"model.stem_channels": 4,
                                                    "model.dtype": "bfloat16"}).model)
    images, text = _batch(f32)
    for a, b in [(f32.image_embedding(images), bf16.image_embedding(images)),
                 (f32.text_embedding(text), bf16.text_embedding(text))]:
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=3e-2)
        assert not np.array_equal(np.asarray(b), np.asarray(a))  # it did compute in bfloat16
    with pytest.raises(ValueError, match="clip dtype='float16'"):
        Clip.from_config(load("clip", "tiny", **{"model.dtype": "float16"}).model)


def test_padding_slots_do_not_change_the_text_embedding():
    model = Clip.from_config(load("clip", "tiny").model)
    _, text = _batch(model)
    # Padding is masked out: the caption's embedding only depends on its tokens, wherever the
    # padding begins in a longer model.
    longer = Clip.from_config(load("clip", "tiny", **{"model.text_len": 24}).model)
    longer.text_pos.value = jnp.concatenate([model.text_pos[...], longer.text_pos[...][16:]])
    longer.token_embed.value = model.token_embed[...]
    nnx.update(longer.text_tower, nnx.state(model.text_tower))
    padded = jnp.concatenate([text, jnp.full((text.shape[0], 8), PAD_ID)], axis=1)
    np.testing.assert_allclose(longer.text_embedding(padded), model.text_embedding(text), atol=1e-5)


def test_retrieval_counts_a_repeated_caption_as_right():
    model = Clip.from_config(load("clip", "tiny").model)
    images, text = _batch(model, b=4)
    text = text.at[1].set(text[0])  # images 0 and 1 share a caption
    _, aux = clip_loss(model, images, text)
    logits = np.asarray(model.logits(images, text))
    same = (np.asarray(text)[:, None] == np.asarray(text)[None]).all(-1)
    expected = np.mean([same[i, j] for i, j in enumerate(logits.argmax(1))])
    np.testing.assert_allclose(float(aux["image_to_text_accuracy"]), expected)


@pytest.mark.parametrize("stem_channels", [0, 8])
def test_contrastive_loss_falls_on_a_fixed_batch(stem_channels):
    model = Clip.from_config(load("clip", "tiny", **{"model.stem_channels": stem_channels}).model)
    assert (model.stem is None) == (stem_channels == 0)
    images, text = _batch(model, b=8)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        (loss, aux), g = jax.value_and_grad(
            lambda p: clip_loss(nnx.merge(graphdef, p), images, text), has_aux=True)(params)
        u, opt = tx.update(g, opt)
        return optax.apply_updates(params, u), opt, loss, aux
    losses = []
    for _ in range(40):
        params, opt, loss, aux = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], losses
    assert float(aux["image_to_text_accuracy"]) == 1.0


def test_trains_through_the_entry_point_and_logs_retrieval(tiny_dvae, tmp_path):
    data_dir, _ = tiny_dvae  # the same tiny `shapes` data
    workdir = str(tmp_path / "clip")
    out = clip_trainer.train_and_evaluate(load("clip", "tiny", **{"data.data_dir": data_dir}), workdir)
    assert 0.0 <= out["image_to_text_accuracy"] <= 1.0 and np.isfinite(out["loss"])
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
             if '"eval' in line]
    assert any("eval/image_to_text_accuracy" in r or "image_to_text_accuracy" in r for r in evals)
    # Validation on `shapes` objects also scores each image's caption against a hard negative,
    assert 0.0 <= out["negative_accuracy"] <= 1.0
    assert 0.0 <= out["negative_image_accuracy"] <= 1.0  # and each caption against a redrawn scene
    with pytest.raises(ValueError, match="model.resolution=32"):
        clip_trainer.train_and_evaluate(
            load("clip", "tiny", **{"data.data_dir": data_dir, "data.resolution": 64}), workdir)


def test_trains_against_hard_negatives_and_resumes_the_same(tiny_dvae, tmp_path):
    data_dir, _ = tiny_dvae
    both = {"data.data_dir": data_dir, "train.hard_negatives": True, "train.negative_images": True,
            "train.negative_image_kinds": "shape,position"}
    config = load("clip", "tiny", **both)
    straight = str(tmp_path / "straight")
    clip_trainer.train_and_evaluate(config, straight)

    def train_losses(workdir):
        records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
        train = [r for r in records if r["split"] == "train"]
        for r in records:  # trained and judged against both kinds of negative
            assert "negative_accuracy" in r and 0 <= r["negative_image_accuracy"] <= 1, r
        return [(r["step"], r["loss"]) for r in train]
    resumed = str(tmp_path / "resumed")
    clip_trainer.train_and_evaluate(load("clip", "tiny", **both, **{"train.num_steps": 3}), resumed)
    clip_trainer.train_and_evaluate(config, resumed)
    assert len(train_losses(straight)) == 6
    np.testing.assert_allclose([x[1] for x in train_losses(resumed)],
                               [x[1] for x in train_losses(straight)], rtol=1e-6)
    offered = hard_negatives.for_data(config.data)
    assert clip_trainer.training_kinds(config, offered) == ("colour", "shape", "position",
                                                            "relation")
    shape_only = load("clip", "tiny", **{"train.negative_kinds": "shape"})
    assert clip_trainer.training_kinds(shape_only, offered) == ("shape",)
    with pytest.raises(ValueError, match="train.negative_kinds: negative kinds 'shape,size'"):
        clip_trainer.train_and_evaluate(load("clip", "tiny", **{
            "data.data_dir": data_dir, "train.hard_negatives": True,
            "train.negative_kinds": "shape,size"}), str(tmp_path / "bad_kinds"))
    assert clip_trainer.training_kinds(config, offered, "negative_image_kinds") == ("shape",
                                                                                     "position")
    with pytest.raises(ValueError, match="train.negative_image_kinds: negative kinds 'colour'"):
        clip_trainer.train_and_evaluate(load("clip", "tiny", **{
            **both, "train.negative_image_kinds": "colour"}), str(tmp_path / "bad_image_kinds"))
    for option in ("hard_negatives", "negative_images"):
        with pytest.raises(ValueError, match=f"train.{option}=True needs a dataset with hard negatives"):
            clip_trainer.train_and_evaluate(load("clip", "tiny", **{
                "data.data_dir": data_dir, f"train.{option}": True,
                "data.dataset": "image_text_folder"}), str(tmp_path / "folder"))
