"""Every command in the README, the design document and the experiments' READMEs names what
exists: a `python -m dalle_jax.…` command its module and subcommand, each `--flag` one that the
command's `--help` lists, each `configs/X.py:preset` a config and preset that build, each
`--config.a.b=…` a field of that config; a script or file it runs is in the repository, and a
shell script parses (`bash -n`)."""

import functools
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers.configs import load
from tests.helpers.paths import ROOT

DOCS = ["README.md", "docs/design.md",
        *sorted(str(p.relative_to(ROOT)) for p in pathlib.Path(ROOT).glob("experiments/**/*.md"))]
CONFIG = re.compile(r"^(?:--config=)?configs/(\w+)\.py(?::(\w+))?$")


def _commands(doc: str) -> list[list[str]]:
    """The shell commands of a document's fenced bash blocks, as words, one per command (lines
    joined at a trailing backslash, comments and the `[` `]` and `|` of optional parts
    removed)."""
    text = pathlib.Path(ROOT, doc).read_text()
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\|\s*(?=--)", " ", line)  # `[--a=… | --b=…]`: alternatives, no pipe
            words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
            command = []
            for w in words + [";"]:
                if w in (";", "&&", "|", "||"):
                    if command:
                        out.append(command)
                    command = []
                elif command or not re.match(r"^[A-Z_]+=", w):  # leading VAR=value settings
                    command.append(w)
    return out


def _all_commands():
    return [(doc, c) for doc in DOCS for c in _commands(doc)]


@functools.cache
def _flags(command: tuple[str, ...]) -> frozenset:
    """The flags a `python -m` command's `--help` lists."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (command, run.stderr[-2000:])
    return frozenset(re.findall(r"^  --(\w+)", run.stdout, re.M))


@functools.cache
def _subcommands(module: str) -> frozenset:
    run = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    listed = run.stdout.split("\ncommands:\n", 1)
    return frozenset(re.findall(r"^\s+(\w+):", listed[1], re.M)) if len(listed) == 2 else frozenset()


def _check_config_words(words: list[str]) -> None:
    """Each config file and preset named builds; each `--config.a.b=…` is a field of it."""
    config = None
    for w in words:
        m = CONFIG.match(w)
        if m:
            assert os.path.isfile(os.path.join(ROOT, "configs", f"{m[1]}.py")), w
            config = load(m[1], m[2])
    for w in words:
        if w.startswith("--config."):
            assert config is not None, f"{w} without a --config"
            node = config
            for part in w.split("=", 1)[0][len("--config."):].split("."):
                assert part in node, f"{w}: the config has no field {part!r}"
                node = node[part]


def _check(words: list[str]) -> str:
    """Checks one command; returns what kind of command it was."""
    head = words[0]
    if head in ("python", "python3") and words[1:2] == ["-m"]:
        module = words[2]
        if module == "pytest" or module == "venv" or module == "pip":
            for w in words[3:]:
                if w.startswith("tests"):
                    assert os.path.exists(os.path.join(ROOT, w)), w
            return module
        assert module.startswith("dalle_jax"), module
        path = os.path.join(ROOT, *module.split("."))
        assert os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__main__.py")), module
        rest = words[3:]
        command = (module,)
        subs = _subcommands(module)
        if subs:
            assert rest and rest[0] in subs, f"{module}: {rest[:1]} is not one of {sorted(subs)}"
            command, rest = (module, rest[0]), rest[1:]
        known = _flags(command)
        for w in rest:
            if w.startswith("--") and not w.startswith("--config."):
                name = w[2:].split("=", 1)[0]
                assert name in known, f"{' '.join(command)} has no flag --{name}"
        _check_config_words(rest)
        return "dalle_jax"
    if head in ("python", "python3", "bash"):
        script = words[1]
        assert os.path.isfile(os.path.join(ROOT, script)), f"{script} is not in the repository"
        if head == "bash":
            run = subprocess.run(["bash", "-n", os.path.join(ROOT, script)], capture_output=True,
                                 text=True)
            assert run.returncode == 0, run.stderr
        _check_config_words(words[2:])
        return "script"
    if head == "pip":
        for flag, value in zip(words, words[1:]):
            if flag == "-r":
                assert os.path.isfile(os.path.join(ROOT, value)), value
        return "pip"
    return "other"


def test_the_docs_hold_the_commands_users_run():
    kinds = [_check(c) for _, c in _all_commands()]
    assert kinds.count("dalle_jax") >= 15 and kinds.count("script") >= 8, kinds


@pytest.mark.parametrize("bad,message", [
    ("python -m dalle_jax.sample --workdir=w --no_such_flag=1", "has no flag --no_such_flag"),
    ("python -m dalle_jax.data prepre --dataset=shapes", "is not one of"),
    ("python -m dalle_jax.train --config=configs/dalle.py:small --config.model.no_such=1",
     "no field 'no_such'"),
    ("bash experiments/nowhere/run.sh", "is not in the repository"),
])
def test_a_wrong_command_is_caught(bad, message):
    with pytest.raises(AssertionError, match=message):
        _check(shlex.split(bad))


def test_a_missing_preset_is_caught():
    with pytest.raises(Exception):
        _check(shlex.split("python -m dalle_jax.train --config=configs/dalle.py:no_such_preset"))
