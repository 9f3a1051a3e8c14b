"""Imports flow one way (docs/architecture.md): cli -> rllib/eval/cloud/deploy -> envs ->
sim, comms, data, with `models` imported only by rllib, eval and deploy, and the top-level
modules (`seeding`, `run_manifest`, `errors`, ...) importing nothing else of ours. The library
never imports `rllib_configs`, `scenario_factory`, `benchmarks` or `tests`, and there is no
import cycle. Every module is parsed with `ast`, so deferred imports inside functions count.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("roadsense", "scenario_factory", "rllib_configs")

# package (first name under roadsense.) -> layer; "" is a top-level module (roadsense/x.py)
LAYER = {"": 0, "sim": 1, "comms": 1, "data": 1, "models": 1, "envs": 2,
         "rllib": 3, "eval": 3, "cloud": 3, "deploy": 3, "cli": 4}
MODELS_IMPORTERS = {"models", "rllib", "eval", "deploy"}
OUTSIDE = {"rllib_configs", "scenario_factory", "benchmarks", "tests"}
ENTRY_POINTS = {"roadsense.__main__"}  # `python -m roadsense` runs the CLI
# (importer, imported) pairs allowed across the layers, each with the reason.
EXCEPTIONS = {
    ("roadsense.models.numpy_policy", "roadsense.deploy.runtime"):
        "the torch-free runtime is the one implementation of the Deep Sets arithmetic; "
        "it imports nothing of ours (checked below)",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The longest prefix of `name` that is one of our modules (else `name` itself)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return name


def _imports(module: str, *, top_level_only: bool = False) -> set[str]:
    """Modules `module` imports (ours resolved to a module; others by their first name)."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    is_package = MODULES[module].name == "__init__.py"
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in MODULES else _resolve(base))
    return out


def _package(module: str) -> str | None:
    """roadsense.data.factory.settings -> "data"; roadsense.errors -> ""; not ours -> None."""
    parts = module.split(".")
    if parts[0] != "roadsense":
        return None
    if len(parts) == 1 or (ROOT / "roadsense" / f"{parts[1]}.py").is_file():
        return ""
    return parts[1]


def _violations(module: str) -> list[str]:
    src = _package(module)
    bad = []
    for target in sorted(_imports(module)):
        first = target.split(".")[0]
        if first in OUTSIDE:
            bad.append(f"{module} imports {target}: the library never imports {first}/")
            continue
        dst = _package(target)
        if dst is None or dst == src or (module, target) in EXCEPTIONS:
            continue
        if src == "":
            bad.append(f"{module} (top-level) imports {target}: top-level modules import only "
                       "other top-level modules")
        elif dst == "models" and src not in MODELS_IMPORTERS:
            bad.append(f"{module} imports {target}: models is imported only by "
                       f"{sorted(MODELS_IMPORTERS - {'models'})}")
        elif LAYER[dst] > LAYER[src]:
            bad.append(f"{module} ({src}, layer {LAYER[src]}) imports {target} "
                       f"({dst}, layer {LAYER[dst]}): an upward import")
    return bad


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES if m.startswith("roadsense")}
    assert packages <= set(LAYER), f"give {sorted(packages - set(LAYER))} a layer in LAYER"


def test_the_library_imports_downward_only():
    bad = [v for m in MODULES if m.startswith("roadsense") and m not in ENTRY_POINTS
           for v in _violations(m)]
    assert not bad, "\n".join(bad)


def test_exceptions_are_leaves():
    for (_, target), reason in EXCEPTIONS.items():
        ours = {t for t in _imports(target) if t.split(".")[0] in PACKAGES}
        assert not ours, f"{target} must import nothing of ours ({reason}); imports {ours}"


def test_no_package_cycle_inside_the_library():
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        src = _package(module)
        if src is None or module in ENTRY_POINTS:
            continue
        for target in _imports(module):
            dst = _package(target)
            if dst is not None and dst != src and (module, target) not in EXCEPTIONS:
                graph[src or "(top-level)"].add(dst or "(top-level)")
    assert _cycle(graph) is None, f"package import cycle: {' -> '.join(_cycle(graph))}"


def test_no_module_import_cycle():
    """Module-scope imports (the ones that run at import time) of the library and the
    experiment/factory scripts form no cycle."""
    graph = {m: {t for t in _imports(m, top_level_only=True) if t in MODULES and t != m}
             for m in MODULES}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The checks above would fail on the shapes they are meant to catch."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    MODULES["roadsense.sim._layer_probe"] = tmp_path / "probe.py"
    (tmp_path / "probe.py").write_text(
        "from roadsense.envs import ConvoyEnv\nimport rllib_configs.ppo_convoy\n"
        "def f():\n    from roadsense.models import DeepSets\n")
    try:
        found = "\n".join(_violations("roadsense.sim._layer_probe"))
    finally:
        del MODULES["roadsense.sim._layer_probe"]
    assert "upward import" in found and "never imports rllib_configs" in found
    assert "models is imported only by" in found
