"""The house's floors and its import graph: no import against the floors, no import circle.

The floors, top to bottom: `cluster` -> `tuning` -> `world_model` -> `rl_agent` -> `genie_common`. A module may
import from its own floor or from lower ones, never from a higher one.

Every `.py` module under the packages is read with `ast` (nothing is imported): every `import x` and
`from x import y`, at module level, inside functions and classes, under `if TYPE_CHECKING:` too, with relative
imports resolved against the importing module. An import names an edge to the module it names: `from pkg import
name` goes to `pkg.name` where that is a module of the project, else to `pkg`. The parent packages that Python
initialises on the way (`a/__init__.py` for `import a.b`) are not edges: a package's `__init__` re-exporting its
own submodules would otherwise be a circle with every sibling that imports another, which Python loads fine.

A circle is a strongly connected component of this module graph with more than one module (or a module importing
itself). Function-level imports count like any other: they only hide a circle from the interpreter, not from the
reader.

Known violations are listed in `ALLOWED_*` below; each fix shrinks them, and a listed violation that no longer
exists fails the test too, so the lists can only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("genie_common", "rl_agent", "world_model", "tuning", "cluster")  # bottom first

# (importer, imported) pairs that import against the floors today.
ALLOWED_UPWARD: set[tuple[str, str]] = set()

# Circles known today, each the sorted tuple of its modules.
ALLOWED_CIRCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def closest(dotted: str) -> str | None:  # `a.b.C` (a class) -> `a.b`
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [closest(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found = [closest(f"{base}.{alias.name}") for alias in node.names]
        else:
            continue
        targets.update(t for t in found if t and t != name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def floor_of(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if floor_of(b) > floor_of(a)}


def circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(tuple(sorted(component)))
    return found


def test_every_floor_is_a_package():
    for floor in FLOORS:
        assert (ROOT / floor / "__init__.py").is_file(), floor


def test_no_import_against_the_floors():
    found = upward_imports(import_graph())
    new = sorted(found - ALLOWED_UPWARD)
    fixed = sorted(ALLOWED_UPWARD - found)
    assert not new, "imports against the floors (" + " -> ".join(reversed(FLOORS)) + "):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in new)
    assert not fixed, "fixed, remove from ALLOWED_UPWARD:\n" + "\n".join(f"  {a} -> {b}" for a, b in fixed)


def test_no_import_circles():
    found = circles(import_graph())
    new = sorted(found - ALLOWED_CIRCLES)
    fixed = sorted(ALLOWED_CIRCLES - found)
    assert not new, "import circles:\n" + "\n".join(f"  {' <-> '.join(c)}" for c in new)
    assert not fixed, "fixed, remove from ALLOWED_CIRCLES:\n" + "\n".join(f"  {c}" for c in fixed)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """The walker itself: an import inside a function and a relative one are edges."""
    modules = {"pkg": tmp_path / "pkg/__init__.py", "pkg.a": tmp_path / "pkg/a.py", "pkg.b": tmp_path / "pkg/b.py"}
    (tmp_path / "pkg").mkdir()
    modules["pkg"].write_text("")
    modules["pkg.a"].write_text("def f():\n    from .b import g\n")
    modules["pkg.b"].write_text("import pkg.a\n")
    assert imports_of("pkg.a", modules["pkg.a"], modules) == {"pkg.b"}
    assert circles({n: imports_of(n, p, modules) for n, p in modules.items()}) == {("pkg.a", "pkg.b")}
