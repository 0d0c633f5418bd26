"""Imports point one way: shared pieces → data → models → training, generation, evaluation →
benchmarks → entry points. Every `dalle_jax` import of every module (those inside functions too)
is read from its source and checked against the layer of what it names."""

import ast
import pathlib

from tests.helpers.paths import ROOT

PACKAGE = pathlib.Path(ROOT) / "dalle_jax"
ENTRY_POINTS = {"train", "sample", "evaluate", "bench", "cli", "data.__main__"}
LAYERS = {  # the first component of a module's name under dalle_jax → its layer
    "text_ids": 0, "storage": 0, "config_parts": 0, "visualize": 0, "parallel": 0, "xla_cpu": 0,
    "runtime_setup": 0,
    "data": 1, "models": 2, "training": 3, "generation": 3, "evaluation": 3, "benchmarks": 4,
}


def _layer(module: str) -> int:
    if module in ENTRY_POINTS or module == "":
        return 5
    return LAYERS[module.split(".")[0]]


def _imports(path: pathlib.Path) -> list[str]:
    """The dalle_jax modules (names under the package) that a file imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "dalle_jax" else \
                [f"dalle_jax.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [n[len("dalle_jax."):] for n in names if n.startswith("dalle_jax.")]
    return out


def _module(path: pathlib.Path, package: pathlib.Path = PACKAGE) -> str:
    name = ".".join(path.relative_to(package).with_suffix("").parts)
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _upward_imports(package: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        me = _module(path, package)
        if me == "__init__":
            continue
        for other in _imports(path):
            if _layer(other) > _layer(me) or (other in ENTRY_POINTS and other != me
                                              and me not in ENTRY_POINTS):
                found.append(f"{me} imports {other}")
    return found


def test_every_module_has_a_layer():
    names = {_module(p).split(".")[0] for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert names - set(LAYERS) <= {e.split(".")[0] for e in ENTRY_POINTS} - {"data"}


def test_no_module_imports_a_later_layer_or_an_entry_point():
    assert _upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk itself: a data module importing training (inside a function) or an entry point
    is caught; one importing parallel is not."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text(
        "from dalle_jax import sample\n"
        "def f():\n    from dalle_jax.training import loop\n    from dalle_jax.parallel import mesh\n")
    assert _upward_imports(tmp_path) == ["data.bad imports sample", "data.bad imports training"]


def _imported_names(path: pathlib.Path) -> list[str]:
    """Like `_imports`, with the names a `from … import` takes: `from dalle_jax.training import
    loop` → 'training.loop'."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dalle_jax."):
            out += [f"{node.module[len('dalle_jax.'):]}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name[len("dalle_jax."):] for a in node.names
                    if a.name.startswith("dalle_jax.")]
    return out


def test_inference_needs_no_training_code():
    """Generation restores trained models itself (`generation.restore`): of `training` it
    imports only the shared state and checkpoints, never a stage's loss, steps or trainer."""
    shared = ("training.checkpoint", "training.train_state")
    found = [f"{_module(p)} imports {m}" for p in sorted((PACKAGE / "generation").rglob("*.py"))
             for m in _imported_names(p) if m.startswith("training.") and not m.startswith(shared)]
    assert found == []
