"""The package's folders are its layers: imports run one way (down), no module imports another package's private
names, and the modules' own imports form no circle. Read from the source with ast, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnphases"

# A layer may import the layers below it (a lower number) and itself, never those above or beside it.
LEVELS = {
    "nnphases.options": 0,
    "nnphases.kernels": 1, "nnphases.probes": 1,
    "nnphases.store": 2,
    "nnphases.recording": 3,
    "nnphases.analysis": 4,  # above recording: the built-in measures declare the tables it reads
    "nnphases.integrations": 5, "nnphases.experiments": 5,
    "nnphases.cli": 6,
    "nnphases": 7, "nnphases.__main__": 7,  # the public face and the entry point
}
# The native extension, built at the package root by setup.py, is the kernels' own (its backends call it).
NATIVE = {"nnphases._C": "nnphases.kernels"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    """The layer a module belongs to: the longest key of LEVELS that is it or a package above it."""
    module = NATIVE.get(module, module)
    return max((k for k in LEVELS if module == k or module.startswith(k + ".")), key=len)


def _imports(module: str, path: Path, top_only: bool) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for each import of ``module``; ``top_only``: the imports
    that run when the module is imported (not inside functions or under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    nodes: list[ast.AST] = list(tree.body) if top_only else list(ast.walk(tree))
    if top_only:  # a module's top level includes its try/except and if blocks, but not TYPE_CHECKING
        flat: list[ast.AST] = []
        while nodes:
            n = nodes.pop(0)
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, (ast.If, ast.Try)):
                nodes = [*n.body, *getattr(n, "orelse", []), *[s for h in getattr(n, "handlers", []) for s in h.body],
                         *nodes]
                continue
            flat.append(n)
        nodes = flat
    out = []
    for n in nodes:
        if isinstance(n, ast.Import):
            out += [(a.name, None, n.lineno) for a in n.names if a.name.startswith("nnphases")]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                target = ".".join(base[: len(base) - n.level + 1] + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            if not target.startswith("nnphases"):
                continue
            for a in n.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, n.lineno) if sub in MODULES or sub in NATIVE else (target, a.name, n.lineno))
    return out


def _private(module: str, name: str | None) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")) or bool(
        name and name.startswith("_") and not name.startswith("__"))


def test_imports_run_downward() -> None:
    wrong = []
    for module, path in MODULES.items():
        here = _layer(module)
        for target, _, line in _imports(module, path, top_only=False):
            there = _layer(target)
            if there != here and LEVELS[there] >= LEVELS[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_crosses_a_package() -> None:
    wrong = []
    for module, path in MODULES.items():
        here = _layer(module)
        for target, name, line in _imports(module, path, top_only=False):
            if target in NATIVE or _layer(target) == here:
                continue
            if _private(target, name):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
                             f"{'.' + name if name else ''}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    graph = {m: sorted({t for t, _, _ in _imports(m, p, top_only=True) if t in MODULES and t != m})
             for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            # A module's own package runs before it; importing a name from that package is not a circle.
            if m.startswith(t + "."):
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_the_layers_cover_the_package() -> None:
    assert all(_layer(m) in LEVELS for m in MODULES)
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} >= {
        "kernels", "probes", "store", "recording", "analysis", "integrations", "experiments"}
