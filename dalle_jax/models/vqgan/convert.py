"""taming-transformers' VQGAN weights (PyTorch) → `VQGAN`, and converted directories.

  python -m dalle_jax.models.vqgan.convert --preset=f16-16384 --weights=last.ckpt \\
      --out=weights/vqgan-f16-16384

`from_state_dict(config, state)` fills a `VQGAN` from a state dict with taming's names
(`encoder.down.0.block.1.conv1.weight`, `quantize.embedding.weight`, …; the training loss's
`loss.*` entries are ignored). `read_weights(path)` reads a taming checkpoint (`.ckpt`, its
`state_dict`; torch needed only here). `save(model, out)` writes `params.npz` and `config.json`,
which `load(out)` reads back with numpy alone.
"""

from __future__ import annotations

import argparse
import json
import sys

from flax import nnx

from dalle_jax.models import converted
from dalle_jax.models.converted import assign, node, to_numpy
from dalle_jax.models.vqgan.model import PRESETS, VQGAN, VQGANConfig


def _pairs(model: VQGAN) -> list[tuple[str, str]]:
    """(our parameter's path, taming's module name) of every convolution and norm."""
    c = model.config
    levels = len(c.ch_mult)
    out = [("conv_in", "encoder.conv_in"), ("enc_norm", "encoder.norm_out"),
           ("enc_out", "encoder.conv_out"), ("quant_conv", "quant_conv"),
           ("post_quant_conv", "post_quant_conv"), ("dec_in", "decoder.conv_in"),
           ("dec_norm", "decoder.norm_out"), ("dec_out", "decoder.conv_out")]
    if c.quantizer == "gumbel":
        out.append(("logits", "quantize.proj"))

    def block(ours, theirs, has_shortcut):
        names = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2")]
        if has_shortcut:
            names.append(("shortcut", "nin_shortcut"))
        return [(f"{ours}.{a}", f"{theirs}.{b}") for a, b in names]

    def attn(ours, theirs):
        return [(f"{ours}.{n}", f"{theirs}.{n}") for n in ("norm", "q", "k", "v", "proj_out")]

    for mid, side in (("enc_mid", "encoder"), ("dec_mid", "decoder")):
        out += block(f"{mid}.block_1", f"{side}.mid.block_1", False)
        out += attn(f"{mid}.attn_1", f"{side}.mid.attn_1")
        out += block(f"{mid}.block_2", f"{side}.mid.block_2", False)
    for side, ours_list, index in (("encoder.down", model.down, lambda k: k),
                                   ("decoder.up", model.up, lambda k: levels - 1 - k)):
        resample = "downsample" if side == "encoder.down" else "upsample"
        for k, level in enumerate(ours_list):
            theirs, ours = f"{side}.{index(k)}", f"{'down' if resample == 'downsample' else 'up'}.{k}"
            for j, b in enumerate(level.blocks):
                out += block(f"{ours}.blocks.{j}", f"{theirs}.block.{j}", b.shortcut is not None)
            for j in range(len(level.attn)):
                out += attn(f"{ours}.attn.{j}", f"{theirs}.attn.{j}")
            if level.conv is not None:
                out.append((f"{ours}.conv", f"{theirs}.{resample}.conv"))
    return out


def from_state_dict(config: str | VQGANConfig, state: dict) -> VQGAN:
    """A `VQGAN` of `config` (a `PRESETS` name or a `VQGANConfig`) holding `state`'s weights.
    A KeyError names a missing weight; a ValueError a weight of the wrong shape."""
    c = PRESETS[config] if isinstance(config, str) else config
    model = VQGAN(c, rngs=nnx.Rngs(0))
    params = {}
    for ours, theirs in _pairs(model):
        weight = to_numpy(state[f"{theirs}.weight"])
        if isinstance(node(model, ours), nnx.Conv):  # torch (out, in, kh, kw) → (kh, kw, in, out)
            params[f"{ours}.kernel"] = weight.transpose(2, 3, 1, 0)
        else:  # GroupNorm
            params[f"{ours}.scale"] = weight
        params[f"{ours}.bias"] = to_numpy(state[f"{theirs}.bias"])
    key = "quantize.embedding.weight" if c.quantizer == "vq" else "quantize.embed.weight"
    params["codebook"] = to_numpy(state[key])
    return assign(model, params, "wrong --preset?")


def read_weights(path: str) -> dict:
    """The state dict of a taming checkpoint ({'state_dict': …} or the dict itself)."""
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=False)
    return loaded.get("state_dict", loaded)


def save(model: VQGAN, out: str) -> str:
    """Writes a converted directory: params.npz and config.json."""
    return converted.save(model, out, "config.json", model.config._asdict())


def load(directory: str) -> VQGAN:
    """The `VQGAN` of a directory `save` wrote."""
    meta, params = converted.read(directory, "config.json",
                                  "python -m dalle_jax.models.vqgan.convert")
    c = VQGANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()})
    return assign(VQGAN(c, rngs=nnx.Rngs(0)), params, "a damaged directory?")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m dalle_jax.models.vqgan.convert",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--weights", required=True, help="a taming-transformers .ckpt")
    p.add_argument("--out", required=True, help="the directory to write")
    args = p.parse_args(argv)
    model = from_state_dict(args.preset, read_weights(args.weights))
    print(json.dumps({"out": save(model, args.out), "config": model.config._asdict()}))


if __name__ == "__main__":
    main(sys.argv[1:])
