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
import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dalle_jax.models.vqgan.model import PRESETS, VQGAN, VQGANConfig


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, np.float32)


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


def _node(model, path: str):
    node = model
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _set(param: nnx.Param, value: np.ndarray, name: str) -> None:
    if param[...].shape != value.shape:
        raise ValueError(f"{name}: the weights give shape {value.shape}, the config needs "
                         f"{param[...].shape}: wrong --preset?")
    param.value = jnp.asarray(value)


def from_state_dict(config: str | VQGANConfig, state: dict) -> VQGAN:
    """A `VQGAN` of `config` (a `PRESETS` name or a `VQGANConfig`) holding `state`'s weights.
    A KeyError names a missing weight; a ValueError a weight of the wrong shape."""
    c = PRESETS[config] if isinstance(config, str) else config
    model = VQGAN(c, rngs=nnx.Rngs(0))
    for ours, theirs in _pairs(model):
        module = _node(model, ours)
        weight = _numpy(state[f"{theirs}.weight"])
        if isinstance(module, nnx.Conv):  # torch (out, in, kh, kw) → (kh, kw, in, out)
            _set(module.kernel, weight.transpose(2, 3, 1, 0), theirs)
        else:  # GroupNorm
            _set(module.scale, weight, theirs)
        _set(module.bias, _numpy(state[f"{theirs}.bias"]), theirs)
    key = "quantize.embedding.weight" if c.quantizer == "vq" else "quantize.embed.weight"
    _set(model.codebook, _numpy(state[key]), key)
    return model


def read_weights(path: str) -> dict:
    """The state dict of a taming checkpoint ({'state_dict': …} or the dict itself)."""
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=False)
    return loaded.get("state_dict", loaded)


def save(model: VQGAN, out: str) -> str:
    """Writes a converted directory: params.npz and config.json."""
    os.makedirs(out, exist_ok=True)
    flat = {".".join(str(k) for k in path): np.asarray(v[...])
            for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}
    np.savez(os.path.join(out, "params.npz"), **flat)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(model.config._asdict(), f, indent=1)
    return out


def load(directory: str) -> VQGAN:
    """The `VQGAN` of a directory `save` wrote."""
    for name in ("params.npz", "config.json"):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} has no {name}: convert the weights first "
                                    "(python -m dalle_jax.models.vqgan.convert)")
    with open(os.path.join(directory, "config.json")) as f:
        raw = json.load(f)
    c = VQGANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = VQGAN(c, rngs=nnx.Rngs(0))
    with np.load(os.path.join(directory, "params.npz")) as z:
        for name in z.files:
            _set(_node(model, name), z[name], name)
    return model


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
