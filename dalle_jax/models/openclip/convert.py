"""open_clip's PyTorch CLIP weights → `OpenClip`, and converted directories that load without torch.

  python -m dalle_jax.models.openclip.convert --arch=ViT-B-32-quickgelu \\
      --weights=ViT-B-32.pt --out=weights/openclip-vit-b-32

`from_state_dict(arch, state)` fills an `OpenClip` from a state dict with open_clip's (and OpenAI
CLIP's) names: `visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`, …,
`token_embedding.weight`, `text_projection`, `logit_scale`. `read_weights(path)` reads one from an
open_clip checkpoint, a plain state dict or OpenAI's TorchScript archive (torch needed only here).
`save(model, out, bpe)` writes `params.npz`, `arch.json` and the BPE merges file into a directory
that `load(out)` reads back with numpy alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
from flax import nnx

from dalle_jax.models import converted
from dalle_jax.models.converted import assign, to_numpy
from dalle_jax.models.openclip.model import Arch, OpenClip, arch as parse_arch

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def _blocks(state: dict, prefix: str, layers: int) -> dict[str, np.ndarray]:
    """Stacked `Blocks` parameters of open_clip's `{prefix}resblocks.N.*`; linear weights
    transposed from PyTorch's (out, in) to (in, out)."""
    names = {"ln1_scale": ("ln_1.weight", False), "ln1_bias": ("ln_1.bias", False),
             "in_proj": ("attn.in_proj_weight", True), "in_proj_bias": ("attn.in_proj_bias", False),
             "out_proj": ("attn.out_proj.weight", True),
             "out_proj_bias": ("attn.out_proj.bias", False),
             "ln2_scale": ("ln_2.weight", False), "ln2_bias": ("ln_2.bias", False),
             "fc": ("mlp.c_fc.weight", True), "fc_bias": ("mlp.c_fc.bias", False),
             "proj": ("mlp.c_proj.weight", True), "proj_bias": ("mlp.c_proj.bias", False)}
    out = {}
    for ours, (theirs, linear) in names.items():
        rows = [to_numpy(state[f"{prefix}resblocks.{i}.{theirs}"]) for i in range(layers)]
        out[ours] = np.stack([r.T if linear else r for r in rows])
    return out


# our parameter → open_clip's name, for the weights taken as they are
_NAMES = {"class_embedding": "visual.class_embedding", "vision_pos": "visual.positional_embedding",
          "ln_pre_scale": "visual.ln_pre.weight", "ln_pre_bias": "visual.ln_pre.bias",
          "ln_post_scale": "visual.ln_post.weight", "ln_post_bias": "visual.ln_post.bias",
          "vision_proj": "visual.proj", "token_embedding": "token_embedding.weight",
          "text_pos": "positional_embedding", "ln_final_scale": "ln_final.weight",
          "ln_final_bias": "ln_final.bias", "text_proj": "text_projection",
          "logit_scale": "logit_scale"}


def from_state_dict(name: str | Arch, state: dict) -> OpenClip:
    """An `OpenClip` of `name` (e.g. 'ViT-B-32', 'ViT-B-32-quickgelu') holding `state`'s weights.
    A KeyError names a missing weight; a ValueError a weight of the wrong shape."""
    a = parse_arch(name) if isinstance(name, str) else name
    model = OpenClip(a, rngs=nnx.Rngs(0))
    conv = to_numpy(state["visual.conv1.weight"])  # (width, 3, patch, patch)
    params = {ours: to_numpy(state[theirs]) for ours, theirs in _NAMES.items()}
    params["patch_embed"] = conv.transpose(2, 3, 1, 0).reshape(-1, conv.shape[0])
    params["logit_scale"] = params["logit_scale"].reshape(())
    for tower, prefix, layers in (("vision", "visual.transformer.", a.vision_layers),
                                  ("text", "transformer.", a.text_layers)):
        params.update({f"{tower}.{k}": v for k, v in _blocks(state, prefix, layers).items()})
    return assign(model, params, "wrong --arch?")


def read_weights(path: str) -> dict:
    """A state dict from an open_clip checkpoint ({'state_dict': …} or the dict itself) or from
    OpenAI's TorchScript archive; the 'module.' prefix of a distributed run is dropped."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError:  # a TorchScript archive (OpenAI's own CLIP files)
        loaded = torch.jit.load(path, map_location="cpu").state_dict()
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def save(model: OpenClip, out: str, bpe: str) -> str:
    """Writes a converted directory: params.npz, arch.json and the BPE merges file."""
    converted.save(model, out, "arch.json", model.arch._asdict())
    shutil.copyfile(bpe, os.path.join(out, BPE_FILE))
    return out


def load(directory: str) -> OpenClip:
    """The `OpenClip` of a directory `save` wrote."""
    meta, params = converted.read(directory, "arch.json",
                                  "python -m dalle_jax.models.openclip.convert")
    return assign(OpenClip(Arch(**meta), rngs=nnx.Rngs(0)), params, "a damaged directory?")


def default_bpe() -> str:
    """The BPE merges file shipped inside the open_clip package (needed once, to convert)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.origin:
        raise FileNotFoundError("open_clip is not installed: pass --bpe=PATH to "
                                f"{BPE_FILE} (it ships with open-clip-torch and OpenAI's CLIP)")
    return os.path.join(os.path.dirname(spec.origin), BPE_FILE)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m dalle_jax.models.openclip.convert",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="e.g. ViT-B-32, ViT-B-32-quickgelu (OpenAI's)")
    p.add_argument("--weights", required=True, help="an open_clip or OpenAI CLIP .pt file")
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--bpe", default=None, help=f"{BPE_FILE} (default: open_clip's own)")
    args = p.parse_args(argv)
    model = from_state_dict(args.arch, read_weights(args.weights))
    print(json.dumps({"out": save(model, args.out, args.bpe or default_bpe()),
                      "arch": model.arch._asdict()}))


if __name__ == "__main__":
    main(sys.argv[1:])
