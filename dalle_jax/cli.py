"""Command-line helpers shared by the entry points: one-line errors, config flag parsing and the
sampling flags of `sample` and `evaluate`."""

from __future__ import annotations

import logging
import os
import re
import sys

from absl import flags


def fail(message, status: int = 2) -> None:
    """Prints `error: message` (first line only) to stderr and exits with `status`.

    A damaged checkpoint (`checkpoint.DamagedCheckpoint`) is written in one system call and ends
    the process at once: the reads orbax still has in flight may print from its closed event
    loop's threads, and would otherwise keep doing so as the interpreter shuts down (nothing is
    left to write at that point)."""
    line = f"error: {str(message).splitlines()[0] if message else message}"
    if type(message).__name__ == "DamagedCheckpoint":
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(2, (line + "\n").encode())
        os._exit(status)
    print(line, file=sys.stderr)
    sys.exit(status)


def join_hosts() -> None:
    """Joins the other processes of a multi-host run when the environment says there are some
    (`parallel.distributed.initialize_from_env`); a bad setting ends in `fail`. Call it before
    anything touches the devices."""
    from dalle_jax.parallel.distributed import initialize_from_env

    try:
        initialize_from_env()  # TPU VM pods, or DALLE_JAX_COORDINATOR & co.
    except ValueError as e:
        fail(str(e))


HELP = ("--help", "-h", "--helpfull", "--helpshort")


def wants_help(argv: list[str]) -> bool:
    """Whether the command line asks for help."""
    return any(a in HELP for a in argv)


def print_commands(prog: str, doc: str | None, commands: dict) -> None:
    """For an entry point of several commands: its docstring and each command's first docstring
    line, then exits 0 (`prog COMMAND --help` tells a command's flags)."""
    print(f"usage: {prog} COMMAND [flags]   ({prog} COMMAND --help: its flags)\n")
    if doc:
        print(doc.strip() + "\n")
    print("commands:")
    for name, fn in commands.items():
        first = fn.__doc__.strip().splitlines()[0] if fn.__doc__ else ""
        print(f"  {name}: {re.sub(r'^`[^`]*`: *', '', first)}")
    sys.exit(0)


def print_help(prog: str, doc: str | None) -> None:
    """Prints `doc` (an entry point's docstring) and the project's own flags, one line each
    (`--name (default): help`), then exits 0. Flags of the libraries (absl, JAX, grain, …) are
    left out."""
    print(f"usage: {prog} [flags]\n")
    if doc:
        print(doc.strip() + "\n")
    by_module = flags.FLAGS.flags_by_module_dict()
    own = sorted({fl.name: fl for module, found in by_module.items()
                  if "dalle_jax" in module for fl in found}.values(), key=lambda fl: fl.name)
    required = _required()
    print("flags:")
    for fl in own:
        default = "required" if fl.name in required else ((fl.default_as_str or "none").strip("'") or "''")
        print(f"  --{fl.name} ({default}): {' '.join((fl.help or '').split())}")
    sys.exit(0)


def _required() -> set[str]:
    """Names of the flags marked as required (absl keeps them as validators)."""
    names = set()
    for fl in flags.FLAGS._flags().values():
        for v in getattr(fl, "validators", []):
            if "other than None" in (getattr(v, "message", "") or ""):
                names.add(fl.name)
    return names


def parse_flags(prog: str, argv: list[str]) -> None:
    """Parses absl flags (incl. `--config=…:preset --config.a.b=…`); bad ones end in `fail`.
    `--help` prints the entry point's docstring and flags (`print_help`) and exits."""
    if wants_help(argv):
        print_help(prog, getattr(sys.modules.get("__main__"), "__doc__", None))
    try:
        flags.FLAGS([prog, *argv])
    except (AttributeError, KeyError) as e:  # ml_collections: unknown config field
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(e.args[0]).split("Did you mean")[0])
        hint = re.search(r'Did you mean "([^"]+)"', str(e.args[0]))
        fail(f"unknown config field {names[0] if names else e!r}"
             + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
    except (flags.Error, ValueError) as e:  # wrong type, unknown preset, missing required flag
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # A config file that raised shows its traceback; its last line is the reason.
        fail(lines[-1] if "Traceback" in str(e) else " ".join(lines))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter


def define_sampling_flags(scope: str = "") -> None:
    """Defines --temperature, --top_k, --top_p and --guidance (read back by `sampling_settings`);
    `scope` prefixes their help, e.g. 'transformer: '."""
    flags.DEFINE_float("temperature", 1.0, f"{scope}sampling temperature")
    flags.DEFINE_integer("top_k", 0, f"{scope}sample among the k likeliest codes (0: all)")
    flags.DEFINE_float("top_p", 1.0, f"{scope}sample within the smallest set of codes holding this "
                       "much probability (1: all)")
    flags.DEFINE_float("guidance", 1.0, f"{scope}classifier-free guidance scale (1: none; needs "
                       "training with text.caption_dropout)")


def sampling_settings() -> dict:
    """The parsed sampling flags as keyword arguments of `generation.sampling.Settings`."""
    f = flags.FLAGS
    return dict(temperature=f.temperature, top_k=f.top_k, top_p=f.top_p, guidance=f.guidance)
