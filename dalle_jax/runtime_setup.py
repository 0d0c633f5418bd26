"""Which JAX a notebook runtime needs, and installing it (the Colab demo's first cell).

Standard library only: it runs before the requirements are installed. A runtime is `tpu` (a TPU
VM or Colab TPU runtime: /dev/accel* or /dev/vfio devices, or the TPU environment variables),
`gpu` (an NVIDIA driver answers `nvidia-smi`) or `cpu`. Every kind installs requirements.txt
(CPU JAX at the pinned version and everything else), then, for an accelerator, JAX's plugin for
it at the same version (`jax[tpu]`, `jax[cuda12]`), then the project itself without dependencies.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys

EXTRAS = {"cpu": None, "gpu": "cuda12", "tpu": "tpu"}
# Imported by the quickstart besides JAX; any missing means the requirements are not installed.
MODULES = ("flax", "optax", "orbax.checkpoint", "grain", "ml_collections", "tokenizers", "tqdm")


def pinned(package: str, requirements: str = "requirements.txt") -> str:
    """The version `requirements` pins `package` to; a ValueError if it pins none."""
    pattern = re.compile(rf"^{re.escape(package)}(\[[^\]]*\])?==([^\s;#]+)", re.IGNORECASE)
    with open(requirements) as f:
        for line in f:
            m = pattern.match(line.strip())
            if m:
                return m.group(2)
    raise ValueError(f"{requirements} pins no version of {package!r}")


def accelerator(env: dict | None = None, which=shutil.which, run=subprocess.run) -> str:
    """'tpu', 'gpu' or 'cpu': what this runtime has, found without importing JAX."""
    env = os.environ if env is None else env
    if (env.get("COLAB_TPU_ADDR") or env.get("TPU_ACCELERATOR_TYPE") or env.get("TPU_NAME")
            or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    if which("nvidia-smi"):
        try:
            if run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0:
                return "gpu"
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


def jax_requirement(kind: str, version: str) -> str:
    """The pip requirement of JAX for a runtime kind, e.g. 'jax[cuda12]==0.10.2'."""
    if kind not in EXTRAS:
        raise ValueError(f"runtime kind {kind!r}; choose one of {sorted(EXTRAS)}")
    extra = EXTRAS[kind]
    return f"jax[{extra}]=={version}" if extra else f"jax=={version}"


def installed(requirements: str = "requirements.txt") -> bool:
    """Whether the pinned JAX and the quickstart's other libraries are importable here."""
    try:
        if importlib.metadata.version("jax") != pinned("jax", requirements):
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    return all(_found(m) for m in MODULES)


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def install_commands(kind: str, requirements: str = "requirements.txt",
                     python: str = sys.executable) -> list[list[str]]:
    """The pip commands that set up a runtime of `kind` from the repository root."""
    pip = [python, "-m", "pip", "install", "-q"]
    commands = [pip + ["-r", requirements]]
    if EXTRAS[kind]:
        commands.append(pip + [jax_requirement(kind, pinned("jax", requirements))])
    commands.append(pip + ["--no-deps", "-e", "."])
    return commands


def ensure(kind: str | None = None, run=subprocess.run, requirements: str = "requirements.txt"
           ) -> str:
    """Installs what this runtime needs unless it is there already; returns the runtime kind."""
    kind = kind or accelerator()
    if not installed(requirements):
        for command in install_commands(kind, requirements):
            print("$", " ".join(command[2:]), flush=True)
            run(command, check=True)
    return kind
