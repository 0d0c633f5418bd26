"""The XLA flags of every test process: N fake CPU devices, and LLVM's cheapest code generation.

The tests' programs are tiny, so compiling them costs far more than running them; XLA's CPU
backend at optimisation level 0 compiles about twice as fast and computes the same values (the
HLO passes are the same; only LLVM's machine-code optimisation is skipped). The flags are the
same in the test process and in every command it starts, so runs compared with each other
compile alike. Users' runs keep XLA's defaults."""


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process with `devices` CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
