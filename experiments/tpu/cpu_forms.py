"""`small` (bfloat16) compiled for v5e:2x2 (data 4) with the CPU-only forms of `dalle_jax.xla_cpu`
forced on, as a TPU step compiled before they were kept to CPU devices: one `bench compile` JSON
line, with `row` = 'cpu-forms'. Compare with the `v5e-4-small` row of run.sh."""

import importlib.util
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from dalle_jax.benchmarks import compile as compile_bench  # noqa: E402
from dalle_jax.xla_cpu import switch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    spec = importlib.util.spec_from_file_location("dalle_config", os.path.join(ROOT, "configs",
                                                                             "dalle.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("small")
    config.model.dtype = "bfloat16"
    switch.active = lambda: True  # every step takes the CPU forms, whatever its devices
    out = compile_bench.run(config, topology="v5e:2x2", mesh_axes={"data": 4})
    print(json.dumps(dict(out, row="cpu-forms")))


if __name__ == "__main__":
    main()
