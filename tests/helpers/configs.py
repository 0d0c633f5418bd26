"""Loads a preset of a config file under `configs/` the way the command line does."""

import importlib.util
import os

from tests.helpers.paths import ROOT


def load(name: str, preset: str | None, **overrides):
    """`configs/<name>.py:<preset>` with dotted overrides, e.g. `**{"train.num_steps": 3}`; a
    preset of None is the file's default."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config() if preset is None else module.get_config(preset)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
