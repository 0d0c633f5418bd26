"""A VQGAN as the image tokenizer: `data encode --tokenizer=vqgan:DIR` writes its codes, the
transformer trains on them, and `Generator`/`sample` decode its samples with the same VQGAN (found
through the codes). The VQGAN has random weights, converted-directory format, built without torch."""

import json

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from dalle_jax.data import __main__ as data_main
from dalle_jax.data import sources
from dalle_jax.generation.codec import load_codec
from dalle_jax.generation.generator import Generator
from dalle_jax.generation.vqgan import TrainedVQGAN
from dalle_jax.models.vqgan import convert
from dalle_jax.models.vqgan.model import VQGAN, VQGANConfig
from dalle_jax.training.dalle import trainer as dalle_trainer
from dalle_jax.training.metrics import read_metrics
from tests.helpers.configs import load

# f = 8 at 32 px: the 4 × 4 grid and 64 codes of `dalle.py:tiny`, with attention at 4 × 4.
TINY = VQGANConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(4,),
                   resolution=32, z_channels=16, embed_dim=16, n_embed=64)


def _random_vqgan() -> VQGAN:
    model = VQGAN(TINY, rngs=nnx.Rngs(1))
    # codebook entries spread like the encoder's outputs, so that many codes are used
    z = model.quant_conv(model.encoder_output(jax.random.uniform(jax.random.key(2), (8, 32, 32, 3),
                                                                 minval=-1, maxval=1)))
    flat = np.asarray(z).reshape(-1, TINY.embed_dim)
    pick = np.random.default_rng(0).choice(len(flat), TINY.n_embed, replace=False)
    model.codebook[...] = flat[pick] + 0.01 * np.random.default_rng(1).normal(size=(64, 16))
    return model


@pytest.fixture(scope="module")
def vqgan_codes(tiny_dvae, tmp_path_factory):
    """(the VQGAN's directory, the data_dir of its codes, the tiny shapes data_dir)."""
    data_dir, _ = tiny_dvae
    root = tmp_path_factory.mktemp("vqgan")
    directory = convert.save(_random_vqgan(), str(root / "vqgan"))
    data_main.main(["encode", f"--tokenizer=vqgan:{directory}", "--dataset=shapes",
                    f"--data_dir={data_dir}", f"--out_data_dir={root / 'codes'}",
                    "--resolution=32", "--splits=train,validation", "--batch_size=20"])
    return directory, str(root / "codes"), data_dir


def test_encode_writes_the_vqgans_codes(vqgan_codes, capsys):
    directory, codes_dir, data_dir = vqgan_codes
    codes = sources.open_split("image_codes", codes_dir, "validation")
    images = sources.open_split("shapes", data_dir, "validation")
    n = len(images)
    order = [int(codes[i]["index"]) for i in range(n)]
    pixels = np.stack([np.asarray(images[i]["image"]) for i in order])
    want = np.asarray(convert.load(directory).encode(pixels.astype(np.float32) / 127.5 - 1))
    got = np.stack([codes[i]["codes"] for i in range(n)])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (n, 4, 4) and len(np.unique(got)) > 8
    meta = sources.open_builder("image_codes", codes_dir).info.metadata
    assert meta["dvae_workdir"] == f"vqgan:{directory}" and meta["vocab_size"] == 64


def test_a_transformer_trains_on_vqgan_codes_and_its_samples_decode(vqgan_codes, tmp_path):
    directory, codes_dir, _ = vqgan_codes
    workdir = str(tmp_path / "dalle")
    dalle_trainer.train_and_evaluate(
        load("dalle", "tiny", **{"data.data_dir": codes_dir, "train.num_steps": 8}), workdir)
    rows = read_metrics(workdir, "train")
    assert rows[-1]["image_loss"] < rows[0]["image_loss"]

    gen = Generator.load(workdir)  # finds the VQGAN through the codes' metadata
    assert isinstance(gen.dvae, TrainedVQGAN) and gen.dvae.reference == f"vqgan:{directory}"
    codes = gen.sample(gen.encode_prompts(["a red circle", "a blue square"]), 3, progress=False)
    images = gen.decode(codes)
    assert codes.shape == (2, 3, 4, 4) and images.shape == (2, 3, 32, 32, 3)
    assert images.dtype == np.uint8
    decoded = np.asarray(convert.load(directory).decode(codes.reshape(-1, 4, 4)))
    want = ((np.clip(decoded, -1, 1) + 1) / 2 * 255).round().astype(np.uint8)
    assert np.abs(images.reshape(want.shape).astype(int) - want).max() <= 1

    # `sample`'s grid and image completion (the image is encoded by the VQGAN, at 32 px)
    from dalle_jax.generation.grid import generate

    start = tmp_path / "start.png"
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(start)
    record = generate(workdir=workdir, prompts=["a red circle"], num_samples=2,
                      out=str(tmp_path / "grid.png"), complete=str(start), keep_rows=2)
    assert len(record["samples"]) == 2 and Image.open(tmp_path / "grid.png").size[0] > 0
    assert json.load(open(tmp_path / "grid.json"))["samples"][0]["prompt"] == "a red circle"


def test_bad_tokenizer_references_are_named(vqgan_codes, tmp_path, capsys):
    directory, _, data_dir = vqgan_codes
    with pytest.raises(FileNotFoundError, match="is not there"):
        load_codec(f"vqgan:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="PRESET:PATH"):
        TrainedVQGAN.load(str(tmp_path / "missing.ckpt"))
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown preset 'f32'"):
        load_codec(f"vqgan:f32:{ckpt}")
    with pytest.raises(SystemExit) as e:  # one line, exit status 2
        data_main.main(["encode", f"--tokenizer=vqgan:{directory}", "--dataset=shapes",
                        f"--data_dir={data_dir}", "--resolution=30",
                        f"--out_data_dir={tmp_path}"])
    assert e.value.code == 2 and "multiple of 8" in capsys.readouterr().err
    codec = load_codec(f"vqgan:{directory}")
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(np.zeros((1, 30, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codec.decode(np.full((1, 4, 4), 64))


def test_two_hosts_encode_what_one_process_encodes(vqgan_codes, tmp_path):
    """`data encode --tokenizer=vqgan:DIR` as a pod runs it: each of two processes encodes its own
    share of every round on its own devices, and the first writes the records of one process."""
    from tests.helpers import processes as proc

    directory, codes_dir, data_dir = vqgan_codes
    out = tmp_path / "two"
    proc.finish(proc.launch("dalle_jax.data", [
        "encode", f"--tokenizer=vqgan:{directory}", "--dataset=shapes", f"--data_dir={data_dir}",
        f"--out_data_dir={out}", "--resolution=32", "--splits=validation", "--batch_size=5"]))
    one = sources.open_split("image_codes", codes_dir, "validation")
    two = sources.open_split("image_codes", str(out), "validation")
    assert len(two) == len(one)
    for i in range(len(one)):
        assert int(two[i]["index"]) == int(one[i]["index"])
        np.testing.assert_array_equal(two[i]["codes"], one[i]["codes"])
