"""Converted weights: NNX parameters by dotted name, and directories of them that numpy reads.

Shared by the converters of published PyTorch models (`models/openclip`, `models/vqgan`): a
converted directory holds `params.npz` (every parameter by its dotted path, e.g.
`vision.in_proj` or `down.0.blocks.1.conv1.kernel`) and a JSON file describing the model, so
loading it needs neither torch nor the original package.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

PARAMS_FILE = "params.npz"


def to_numpy(value) -> np.ndarray:
    """A float32 numpy copy of a torch tensor or an array."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, np.float32)


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter of `model` by dotted path."""
    return {".".join(str(k) for k in path): np.asarray(v[...])
            for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}


def node(model: nnx.Module, path: str):
    """The attribute (or list item, for a number) at a dotted path."""
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def assign(model: nnx.Module, params: dict[str, np.ndarray], hint: str) -> nnx.Module:
    """Sets each parameter at its dotted path; a ValueError names one of the wrong shape (`hint`
    says what to check, e.g. the architecture flag)."""
    for name, value in params.items():
        param = node(model, name)
        if param[...].shape != np.shape(value):
            raise ValueError(f"{name}: the weights give shape {np.shape(value)}, the model needs "
                             f"{param[...].shape}: {hint}")
        param.value = jnp.asarray(value)
    return model


def save(model: nnx.Module, out: str, meta_file: str, meta: dict) -> str:
    """Writes `params.npz` and `meta_file` (the JSON `meta`) into the directory `out`."""
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, PARAMS_FILE), **flat_params(model))
    with open(os.path.join(out, meta_file), "w") as f:
        json.dump(meta, f, indent=1)
    return out


def read(directory: str, meta_file: str, command: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, parameters by dotted path) of a directory `save` wrote; a FileNotFoundError names
    the missing file and the `command` that converts."""
    for name in (PARAMS_FILE, meta_file):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} has no {name}: convert the weights first "
                                    f"({command})")
    with open(os.path.join(directory, meta_file)) as f:
        meta = json.load(f)
    with np.load(os.path.join(directory, PARAMS_FILE)) as z:
        return meta, {k: z[k] for k in z.files}
