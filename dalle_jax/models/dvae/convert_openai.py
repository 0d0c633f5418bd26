"""OpenAI's released dVAE (PyPI `DALL-E`, `dall_e.Encoder` / `dall_e.Decoder`) → our Flax model.

    import dall_e
    enc, dec = dall_e.load_model("encoder.pkl"), dall_e.load_model("decoder.pkl")
    model = convert_openai.dvae_from_torch(enc, dec)   # a DVAE, quantizer='gumbel'

The module trees match by name, so conversion is a rename plus a kernel transpose from PyTorch's
(out, in, kh, kw) to (kh, kw, in, out). Torch is needed only here, and only when converting.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from dalle_jax.models.dvae.model import DVAE


def _to_numpy(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _flax_path(torch_key: str) -> tuple[str, ...]:
    """'blocks.group_1.block_2.res_path.conv_3.w' → ('groups', 'group_1', 'block_2', 'res_path', 'conv_3', 'w')."""
    parts = torch_key.split(".")
    if parts[0] != "blocks":
        raise ValueError(f"unexpected parameter {torch_key!r} in the PyTorch module")
    parts = parts[1:]
    if parts[0].startswith("group_"):
        return ("groups", *parts)
    if parts[0] == "output":  # output.conv.w → output.w
        return ("output", parts[-1])
    return tuple(parts)


def params_from_torch(module) -> dict:
    """Nested dict of float32 numpy arrays, laid out like our Encoder/Decoder parameters."""
    out: dict = {}
    for key, value in module.state_dict().items():
        arr = _to_numpy(value)
        if arr.ndim == 4:
            arr = arr.transpose(2, 3, 1, 0)  # (out, in, kh, kw) → (kh, kw, in, out)
        node = out
        path = _flax_path(key)
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = arr
    return out


def _load_into(module: nnx.Module, params: dict, what: str) -> None:
    state = nnx.state(module, nnx.Param)
    ours = nnx.to_pure_dict(state)

    def check(a, b, path=()):
        if isinstance(a, dict):
            if set(a) != set(b):
                raise ValueError(f"{what}: parameters differ at {'/'.join(path) or 'top'}: "
                                 f"ours {sorted(a)}, PyTorch {sorted(b)}")
            for k in a:
                check(a[k], b[k], path + (k,))
        elif a.shape != b.shape:
            raise ValueError(f"{what}: {'/'.join(path)} has shape {b.shape} in PyTorch, {a.shape} here")

    check(ours, params)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(module, state)


def dvae_from_torch(encoder, decoder) -> DVAE:
    """A `DVAE` (gumbel) carrying the weights of PyTorch `dall_e` encoder and decoder."""
    if encoder.vocab_size != decoder.vocab_size or encoder.n_hid != decoder.n_hid \
            or encoder.n_blk_per_group != decoder.n_blk_per_group:
        raise ValueError(
            "encoder and decoder sizes differ: vocab_size, n_hid, n_blk_per_group = "
            f"{encoder.vocab_size, encoder.n_hid, encoder.n_blk_per_group} vs "
            f"{decoder.vocab_size, decoder.n_hid, decoder.n_blk_per_group}"
        )
    if encoder.group_count != 4 or decoder.group_count != 4:
        raise ValueError("only the released 4-group layout is supported")
    model = DVAE(quantizer="gumbel", vocab_size=encoder.vocab_size, n_hid=encoder.n_hid,
                           n_blk_per_group=encoder.n_blk_per_group, n_init=decoder.n_init,
                           rngs=nnx.Rngs(0))
    _load_into(model.encoder, params_from_torch(encoder), "encoder")
    _load_into(model.decoder, params_from_torch(decoder), "decoder")
    return model
