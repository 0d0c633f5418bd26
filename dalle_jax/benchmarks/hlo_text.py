"""Reading a compiled module's text (`compiled.as_text()`): its collectives, along which mesh
axes they run and whether inside a loop, and its TPU kernel calls.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_RE = re.compile(r" (" + "|".join(COLLECTIVES) + r")(?:-start)?\(")  # opcodes
_COMPUTATION_RE = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")

# XLA's TPU backend writes a reduce-scatter as a fusion whose computation is named
# `all-reduce-scatter…`: an all-reduce followed by each device's dynamic slice, run as one
# reduce-scatter. The all-reduce inside such a computation is counted as a reduce-scatter.
_REDUCE_SCATTER_FUSION = "all-reduce-scatter"


def _collective_lines(hlo_text: str):
    """(computation, kind, line) of each collective instruction of the module, in order, with
    the all-reduce of a TPU reduce-scatter fusion given as 'reduce-scatter'."""
    current = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION_RE.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            continue
        for kind in _COLLECTIVE_RE.findall(line):
            if kind == "all-reduce" and (current or "").startswith(_REDUCE_SCATTER_FUSION):
                kind = "reduce-scatter"
            yield current, kind, line


def collectives(hlo_text: str) -> dict[str, int]:
    """How many instructions of each collective kind the compiled module holds."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    for _, kind, _ in _collective_lines(hlo_text):
        counts[kind] += 1
    return counts


_INSTRUCTION_RE = re.compile(
    r" (" + "|".join(COLLECTIVES) + r")(?:-start)?\(.*?replica_groups=(\{\{[^=]*?\}\}|\{\}|"
    r"\[[0-9,]+\]<=\[[0-9,]+\](?:T\([0-9,]+\))?|"
    r"mesh\[[^\]]*\](?:, device_ids=\((?:[^()]|\([^)]*\))*\))? \{[^}]*\})")
_CALLED_RE = re.compile(r"(?:body|condition|calls|to_apply|branch_computations)=\{?([%\w.\-, ]+)\}?")


def _iota(text: str) -> np.ndarray:
    """The device list of an HLO iota form 'dims' or 'dims T(perm)', e.g. '[2,2]T(1,0)'."""
    dims_text, _, perm_text = text.partition("T")
    dims = [int(d) for d in dims_text.strip("[]").split(",")]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if perm_text:
        ids = ids.transpose([int(p) for p in perm_text.strip("()").split(",")])
    return ids.reshape(-1)


def _device_groups(text: str) -> frozenset:
    """The device groups of an HLO `replica_groups=` value, as indices of the program's devices."""
    if text.startswith("{{"):
        return frozenset(frozenset(int(i) for i in g.split(",") if i)
                         for g in text[2:-2].split("},{"))
    if text.startswith("mesh["):  # mesh['a'=2,'b'=2][, device_ids=(iota)] {'b'}
        sizes_text, rest = text[5:].split("]", 1)
        names = [a.split("=")[0].strip("'") for a in sizes_text.split(",")]
        sizes = [int(a.split("=")[1]) for a in sizes_text.split(",")]
        ids = None
        device_ids = re.search(r"device_ids=\(([^()]*(?:\([^)]*\))?)\)", rest)
        if device_ids:
            ids = _iota(device_ids.group(1)).reshape(sizes)
        axes_text = rest[rest.index("{") + 1:rest.index("}")]
        picked = [names.index(a.strip().strip("'")) for a in axes_text.split(",")]
        return _groups_along(sizes, picked, ids)
    if text.startswith("["):  # iota form: [groups,size]<=[dims]T(perm)
        shape_text, _, rest = text.partition("<=")
        rows = _iota(rest).reshape([int(d) for d in shape_text.strip("[]").split(",")])
        return frozenset(frozenset(int(i) for i in row) for row in rows)
    return frozenset()  # {}: every device


def _groups_along(sizes, axes, ids=None) -> frozenset:
    ids = np.arange(math.prod(sizes)).reshape(sizes) if ids is None else ids
    rest = [a for a in range(len(sizes)) if a not in axes]
    rows = ids.transpose(rest + list(axes)).reshape(-1, math.prod(sizes[a] for a in axes))
    return frozenset(frozenset(int(i) for i in row) for row in rows)


def _loop_computations(hlo_text: str) -> set[str]:
    """Names of the module's computations that run inside a while loop (its bodies, and all that
    they call)."""
    calls: dict[str, set[str]] = {}
    bodies: set[str] = set()
    current = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION_RE.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            calls.setdefault(current, set())
            continue
        if current is None:
            continue
        for group in _CALLED_RE.findall(line):
            calls[current].update(n.strip().lstrip("%") for n in group.split(",") if n.strip())
        bodies.update(re.findall(r"body=%([\w.\-]+)", line))
    inside, todo = set(), list(bodies)
    while todo:
        name = todo.pop()
        if name not in inside:
            inside.add(name)
            todo.extend(calls.get(name, ()))
    return inside


def collectives_by_axis(hlo_text: str, mesh) -> dict[str, dict[str, int]]:
    """{kind: {mesh axes: count}} of the compiled module's collectives: which mesh axes each
    one's device groups run along ('data+fsdp', 'tensor', …), with ' in loop' added for those
    inside a loop (the scan over layers). Collectives without device groups (permutes) are left
    to `collectives`."""
    names, sizes = list(mesh.shape), list(mesh.shape.values())
    by_groups = {}
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), r):
            if any(sizes[a] == 1 for a in combo):
                continue
            by_groups.setdefault(_groups_along(sizes, combo), "+".join(names[a] for a in combo))
    everyone = frozenset([frozenset(range(math.prod(sizes)))])
    in_loop = _loop_computations(hlo_text)
    out: dict[str, dict[str, int]] = {}
    for current, kind, line in _collective_lines(hlo_text):
        match = _INSTRUCTION_RE.search(line)
        if not match:
            continue
        groups = match.group(2)
        axes = by_groups.get(_device_groups(groups) or everyone, "other")
        if current in in_loop:
            axes += " in loop"
        out.setdefault(kind, {})
        out[kind][axes] = out[kind].get(axes, 0) + 1
    return out


_KERNEL_RE = re.compile(r"%([A-Za-z_\-]+)[.\d]* = .*custom_call_target=\"tpu_custom_call\"")


def tpu_kernels(hlo_text: str) -> dict[str, int]:
    """{kernel name: calls} of the module's TPU kernel calls: Pallas (Mosaic) kernels such as
    splash attention's `splash_mha_fwd…`, and kernels XLA's TPU compiler writes itself (its
    `online-softmax` for a dense softmax over keys)."""
    counts: dict[str, int] = {}
    for name in _KERNEL_RE.findall(hlo_text):
        counts[name] = counts.get(name, 0) + 1
    return counts


def splash_calls(hlo_text: str) -> int:
    """How many calls of splash attention's Pallas kernels the module holds."""
    return sum(n for name, n in tpu_kernels(hlo_text).items() if name.startswith("splash"))
