"""Transparent huge pages for XLA's host buffers: the entry points restart themselves, once, with
glibc's `glibc.malloc.hugetlb=1` tunable.

On the CPU backend XLA allocates each compiled call's scratch buffer afresh (1.8 GiB for a `long`
bfloat16 train step of `dalle.py:small`), and glibc serves a block that large with a new `mmap`.
So every step faults the whole buffer in, 4 KiB page by 4 KiB page: about 530,000 page faults
and 1.8 s of kernel CPU time per step. With the tunable glibc asks the kernel for 2 MiB pages for
such blocks (`madvise(MADV_HUGEPAGE)`), which is what the kernel's default THP mode, `madvise`,
waits for: 50 to 130 times fewer faults, and steps about 5% faster (experiments/dalle_speed).

glibc reads its tunables once, when the process starts, so `use_huge_pages()` re-executes the same
command line (`execve`: same process id, before the command has done any work) with the tunable
added. It does so only where it helps: a process that will compute on the CPU (`JAX_PLATFORMS`
starting with `cpu`, or unset on a machine with no TPU or GPU device files), on Linux, with glibc
2.35 or newer and THP mode `madvise`. Set `DALLE_JAX_HUGE_PAGES=0` to keep the process as started.
"""

from __future__ import annotations

import glob
import logging
import os
import sys

OPT_OUT = "DALLE_JAX_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
# Device files of accelerators JAX would pick over the CPU: TPU VMs (v4 and later: /dev/accel*,
# v5e/v6e: /dev/vfio/N) and NVIDIA GPUs.
ACCELERATOR_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def computes_on_cpu(environ, accelerator_files=ACCELERATOR_FILES) -> bool:
    """Whether JAX in this process will compute on the CPU: `JAX_PLATFORMS`'s first entry when it
    is set, else whether no accelerator device file exists."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(glob.glob(pattern) for pattern in accelerator_files)


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library if it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def tunables_to_add(environ, mode: str | None, libc: tuple[int, int] | None) -> str | None:
    """The GLIBC_TUNABLES value to restart with, or None to leave the process as it is.

    None when the user opted out, when the tunable is already set (by the user, or by the restart
    itself), when glibc is older than 2.35 (no such tunable) or absent, or when the kernel's THP
    mode is not `madvise` (`always` gives huge pages without asking, `never` refuses them)."""
    current = environ.get("GLIBC_TUNABLES", "")
    if (environ.get(OPT_OUT, "1") == "0" or TUNABLE in current or libc is None
            or libc < (2, 35) or mode != "madvise"):
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def active(environ=os.environ, mode: str | None = None) -> bool:
    """Whether this process's large host blocks get huge pages (reported by `bench train`)."""
    mode = thp_mode() if mode is None else mode
    asked = f"{TUNABLE}=1" in environ.get("GLIBC_TUNABLES", "")
    return mode == "always" or (mode == "madvise" and asked)


def use_huge_pages() -> None:
    """Restarts the command with the tunable where it helps (see the module docstring); returns
    without doing anything otherwise. Call it first thing in an entry point's `__main__` block."""
    if not computes_on_cpu(os.environ):  # XLA's host scratch buffers matter on the CPU only
        return
    tunables = tunables_to_add(os.environ, thp_mode(), glibc_version())
    if tunables is None:  # also off Linux: no glibc there, and no THP file
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    logging.debug("restarting with GLIBC_TUNABLES=%s: %s", tunables, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, {**os.environ, "GLIBC_TUNABLES": tunables})
    except OSError as e:  # the interpreter cannot be re-executed: go on without huge pages
        logging.warning("could not restart with %s=1 (%s); continuing without it", TUNABLE, e)
