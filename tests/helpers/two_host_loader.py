"""One of two 'hosts' on loopback: builds the loader on a 4-device global mesh, prints a checksum.

Run as: python two_host_loader.py PROCESS_ID PORT TOKENIZER_JSON
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.helpers.xla_flags import xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags(2)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, port, tokenizer_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id)

import jax.numpy as jnp  # noqa: E402

from dalle_jax.data.loader import Loader  # noqa: E402
from dalle_jax.data.tokenizer import TextTokenizer  # noqa: E402
from dalle_jax.parallel.mesh import make_mesh  # noqa: E402
from tests.helpers.records import records  # noqa: E402

mesh = make_mesh({"data": -1})
tok = TextTokenizer.load(tokenizer_path, text_len=12)
loader = Loader(records(), tokenizer=tok, resolution=8, global_batch_size=8, seed=5, mesh=mesh)
batch = next(loader)
weights = jnp.arange(1, 9, dtype=jnp.float32)[:, None]
checksum = jax.jit(lambda t: jnp.sum(t.astype(jnp.float32) * weights))(batch["text"])
print(json.dumps({
    "process": jax.process_index(), "count": jax.process_count(), "devices": jax.device_count(),
    "shape": list(batch["text"].shape), "checksum": float(checksum),
    "local_captions": list(batch["caption"]),
    "local_rows": [int(s.index[0].start or 0) for s in batch["text"].addressable_shards],
}), flush=True)
jax.distributed.shutdown()
