"""Code that exists only for XLA's CPU backend, kept apart so that the models read as the paper.

On CPU devices, XLA's backend runs some forms of the same computation much faster than others.
Everything written for that alone lives here:

- `switch`: the one place that decides, per traced step, whether the CPU forms are taken: they are
  exactly when the devices of the step's mesh (or, with no mesh, the default backend) are CPUs.
  Models call `switch.project`, `switch.checkpoint_name` and `switch.transposed_copy`; on TPU and
  GPU these are a plain `jnp` matmul, `jax.ad_checkpoint.checkpoint_name` and `jnp.swapaxes`.
- `mixed_matmul`: bfloat16 matmuls with float32 accumulation and gradients in the forms XLA's CPU
  kernels run fast.
- `saved_bits`: bfloat16 residuals saved by a remat policy as raw bits.
- `huge_pages`: the entry points' restart with glibc's huge-page tunable (CPU processes only).
"""
