"""OpenAI/LAION CLIP in NNX against open_clip itself: converted random weights give open_clip's
embeddings, CLIP's BPE gives open_clip's ids, and a converted directory ranks images alone."""

import importlib
import os
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from dalle_jax.models.openclip import convert
from dalle_jax.models.openclip.model import ARCHS, OPENAI_MEAN, OPENAI_STD, OpenClip, arch
from dalle_jax.models.openclip.tokenizer import ClipTokenizer
from tests.helpers.paths import ROOT


def _import_open_clip():
    """open_clip, with the torchvision stand-in of tests/helpers/stubs where no torchvision
    loads (see its docstring)."""
    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.path.insert(0, os.path.join(ROOT, "tests", "helpers", "stubs"))
    import open_clip

    return open_clip


open_clip = _import_open_clip()

TEXTS = ["a red circle in the top left", "A Photo of   two DOGS, playing!", "don't stop: it's 3:45pm",
         "café naïve façade —東京タワー 🙂", "x&amp;y &lt;b&gt; 1234567 ½ ²", "", "   ",
         "supercalifragilisticexpialidocious hyper-parameter e-mail",
         " ".join(["long"] * 100)]


def _random_open_clip(name: str, seed: int = 0):
    """open_clip's model of `name` with every weight perturbed (LayerNorms and biases too, so that
    a transposed or misplaced tensor shows)."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-32-quickgelu"])
def test_converted_weights_give_open_clips_embeddings(name):
    theirs = _random_open_clip(name)
    ours = convert.from_state_dict(name, theirs.state_dict())
    pixels = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    ids = open_clip.tokenize(TEXTS[:4]).numpy()
    with torch.no_grad():
        want_image = theirs.encode_image(torch.from_numpy(pixels).permute(0, 3, 1, 2)).numpy()
        want_text = theirs.encode_text(torch.from_numpy(ids)).numpy()
    assert _rel(ours.encode_image(pixels), want_image) < 1e-4
    assert _rel(ours.encode_text(ids.astype(np.int32)), want_text) < 1e-4
    np.testing.assert_allclose(float(ours.logit_scale[...]), float(theirs.logit_scale.detach()),
                               rtol=1e-6)


def test_every_architecture_has_open_clips_parameter_count():
    for name in ARCHS:
        with torch.device("meta"):  # shapes only: nothing allocated
            theirs = open_clip.CLIP(**open_clip.get_model_config(name))
        count = sum(p.numel() for p in theirs.parameters())
        ours = nnx.eval_shape(lambda: OpenClip(arch(name), rngs=nnx.Rngs(0)))
        assert sum(v.size for v in jax.tree.leaves(nnx.state(ours, nnx.Param))) == count, name
    with pytest.raises(ValueError, match="ViT-B-32"):
        arch("ViT-H-14")


def test_clip_bpe_gives_open_clips_ids():
    tokenizer = ClipTokenizer(convert.default_bpe())
    np.testing.assert_array_equal(tokenizer.encode_batch(TEXTS), open_clip.tokenize(TEXTS).numpy())
    assert tokenizer.encode_batch(TEXTS)[-1, -1] == tokenizer.end_id  # cut, and still ended


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(open_clip model, its .pt file, the directory `convert` made of it)."""
    root = tmp_path_factory.mktemp("openclip")
    theirs = _random_open_clip("ViT-B-32", seed=1)
    weights = str(root / "weights.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in theirs.state_dict().items()}}, weights)
    out = str(root / "converted")
    convert.main(["--arch=ViT-B-32", f"--weights={weights}", f"--out={out}"])
    return theirs, weights, out


def test_a_converted_directory_ranks_without_torch(converted, tmp_path):
    from dalle_jax.generation.rerank import load_ranker

    theirs, weights, out = converted
    assert sorted(os.listdir(out)) == ["arch.json", convert.BPE_FILE, "params.npz"]
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    from_dir = load_ranker(f"openclip:{out}")
    from_file = load_ranker(f"openclip:ViT-B-32:{weights}")
    scores = from_dir.scores(images, "a red circle")
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 1 + 1e-5)
    np.testing.assert_allclose(scores, from_file.scores(images, "a red circle"), atol=1e-6)
    # open_clip's model on the same preprocessed pixels gives the same cosine similarities
    pixels = torch.from_numpy(from_dir.model.preprocess(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        i = torch.nn.functional.normalize(theirs.encode_image(pixels), dim=-1)
        t = torch.nn.functional.normalize(theirs.encode_text(open_clip.tokenize(["a red circle"])),
                                          dim=-1)
    np.testing.assert_allclose(scores, (i @ t[0]).numpy(), atol=1e-5)
    # preprocessing: the shorter side to 224, the centre kept, OpenAI's mean and std
    flat = np.full((1, 100, 300, 3), 255, np.uint8)
    np.testing.assert_allclose(from_dir.model.preprocess(flat)[0, 0, 0],
                               (1 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD), rtol=1e-5)
    assert from_dir.model.preprocess(flat).shape == (1, 224, 224, 3)
    with pytest.raises(FileNotFoundError, match="convert the weights"):
        load_ranker(f"openclip:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="ARCH:PATH"):
        load_ranker("openclip:ViT-B-32:/no/such/file.pt")


def test_sample_reranks_with_a_converted_clip(converted, tiny_dalle, tmp_path):
    """`sample --clip=openclip:DIR`: the converted model scores and picks the grid's samples."""
    from dalle_jax.generation.grid import generate

    out = str(tmp_path / "grid.png")
    record = generate(workdir=tiny_dalle, prompts=["a red circle"], out=out, num_samples=3,
                      rerank=1, clip_workdir=f"openclip:{converted[2]}")
    scores = [s["score"] for s in record["samples"]]
    shown = [s for s in record["samples"] if s["in_grid"]]
    assert len(shown) == 1 and shown[0]["score"] == max(scores) and os.path.getsize(out) > 0
