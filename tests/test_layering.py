"""The package layering: imports inside ``zhisuan`` flow one way, lowest rank first.

The import graph is read from the source with ``ast`` (nothing is imported), so the test is fast
and sees every import, including the ones deferred into functions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "zhisuan"

# The rank of each top-level module or package of zhisuan. An import may only reach the same or a
# lower rank. A new package must be placed here (the test fails until it is).
RANKS: dict[str, int] = {
    "errors": 0,
    "_io": 0,
    "_child": 0,
    "results": 0,
    "progress": 0,
    "precision": 0,
    "__init__": 0,
    "graph": 1,
    "device": 1,
    "runtime": 1,
    "zoo": 2,
    "inputs": 2,
    "convert": 3,
    "optimize": 3,
    "quantize": 3,
    "compare": 3,
    "profile": 3,
    "bench": 4,
    "serve": 4,
    "doctor": 4,
    "apps": 4,
    "platform": 4,
    "pipeline": 4,
    "report": 5,
    "cli": 6,
    "__main__": 6,
}

# Upward edges tolerated while they are being removed (none now: keep it empty).
ALLOWED_UPWARD: set[tuple[str, str]] = set()

# Only the command line may draw on the terminal.
CLI_ONLY = ("typer", "rich")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "zhisuan.compare.core"
    target: str  # imported module, e.g. "zhisuan.compare.metrics"
    path: Path
    line: int
    module_level: bool

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line} -> {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes that run at import time (not inside a function body, nor under
    ``if TYPE_CHECKING:``, which never runs). Ranks still see every import."""
    found: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.add(id(child))
            visit(child)

    visit(tree)
    return found


def _resolve(node: ast.ImportFrom, source: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, modules: dict[str, Path]) -> tuple[list[Edge], list[tuple[str, int]]]:
    """The zhisuan modules `path` imports, and its imports of third-party top-level names."""
    source = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = _module_level_nodes(tree)
    edges: list[Edge] = []
    external: list[tuple[str, int]] = []

    def add(target: str, node: ast.stmt) -> None:
        # "from zhisuan.compare import metrics" names a module; "from zhisuan.compare import x" a symbol
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        if target != source:
            edges.append(Edge(source, target, path, node.lineno, id(node) in top_level))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "zhisuan":
                    add(alias.name, node)
                else:
                    external.append((alias.name.split(".")[0], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, source, path.name == "__init__.py")
            if target is None:
                continue
            if target.split(".")[0] != "zhisuan":
                external.append((target.split(".")[0], node.lineno))
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                add(submodule if submodule in modules else target, node)
    return edges, external


def all_edges() -> list[Edge]:
    modules = all_modules()
    return [edge for path in modules.values() for edge in imports_of(path, modules)[0]]


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_rank() -> None:
    unplaced = sorted({package_of(m) for m in all_modules()} - RANKS.keys())
    assert not unplaced, f"place these packages in RANKS of tests/test_layering.py: {unplaced}"


def test_imports_never_reach_a_higher_rank() -> None:
    offending = []
    for edge in all_edges():
        source_rank = RANKS.get(package_of(edge.source))
        target_rank = RANKS.get(package_of(edge.target))
        if source_rank is None or target_rank is None or target_rank <= source_rank:
            continue
        if (edge.source, f"zhisuan.{package_of(edge.target)}") in ALLOWED_UPWARD:
            continue
        offending.append(f"{edge.where()} (rank {source_rank} -> {target_rank})")
    assert not offending, "imports to a higher layer:\n" + "\n".join(sorted(set(offending)))


def test_private_modules_stay_in_their_package() -> None:
    # zhisuan/_io.py is the one private module of the top level and is meant for everyone.
    offending = set()
    for edge in all_edges():
        parts = edge.target.split(".")
        private = [i for i, part in enumerate(parts) if part.startswith("_") and i > 1]
        if private and not edge.source.startswith(".".join(parts[: private[0]]) + "."):
            offending.add(edge.where())
    assert not offending, "imports of another package's private module:\n" + "\n".join(sorted(offending))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a deep graph cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
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
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                components.append(sorted(component))
    return components


def test_no_import_cycles_at_module_level() -> None:
    # A package's __init__ re-exporting its submodules is not a cycle worth reporting: each
    # submodule importing a sibling through the package would be. Function-level imports are
    # left out on purpose: deferring an import into a function is how heavy dependencies wait.
    graph: dict[str, set[str]] = {m: set() for m in all_modules()}
    lines: dict[tuple[str, str], str] = {}
    for edge in all_edges():
        if edge.module_level:
            graph[edge.source].add(edge.target)
            lines.setdefault((edge.source, edge.target), edge.where())
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    described = []
    for cycle in cycles:
        members = set(cycle)
        inside = sorted(w for (s, t), w in lines.items() if s in members and t in members)
        described.append(" <-> ".join(cycle) + "\n    " + "\n    ".join(inside))
    assert not cycles, "import cycles between modules:\n" + "\n".join(described)


def test_runtime_may_import_device_but_not_the_reverse() -> None:
    # Same rank, one direction: the runtimes use device facts (usable CPUs); the device listing
    # is handed the runtimes' statuses (or a registered source) instead of importing them.
    offending = sorted({e.where() for e in all_edges()
                        if package_of(e.source) == "device" and package_of(e.target) == "runtime"})
    assert not offending, "zhisuan.device importing zhisuan.runtime:\n" + "\n".join(offending)


def test_only_the_cli_imports_typer_or_rich() -> None:
    offending = []
    modules = all_modules()
    for name, path in modules.items():
        if package_of(name) in ("cli", "__main__"):
            continue
        for top, line in imports_of(path, modules)[1]:
            if top in CLI_ONLY:
                offending.append(f"{path.relative_to(SRC.parent)}:{line} -> {top}")
    assert not offending, "core code importing the terminal libraries:\n" + "\n".join(offending)


def test_the_walker_sees_every_import_form(tmp_path: Path) -> None:
    # The walker itself, on a made-up module, so a silently blind walker cannot pass the rest.
    pkg = tmp_path / "zhisuan"
    (pkg / "compare").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "compare" / "__init__.py").write_text("")
    (pkg / "compare" / "metrics.py").write_text("")
    (pkg / "compare" / "core.py").write_text(
        "import zhisuan.errors\n"
        "from zhisuan.graph import index\n"
        "from zhisuan.compare.metrics import x\n"
        "from . import metrics\n"
        "def f():\n"
        "    from zhisuan import report\n"
    )
    for leaf in ("errors.py", "report.py"):
        (pkg / leaf).write_text("")
    (pkg / "graph").mkdir()
    (pkg / "graph" / "__init__.py").write_text("")
    (pkg / "graph" / "index.py").write_text("")
    global SRC
    saved, SRC = SRC, pkg
    try:
        modules = all_modules()
        edges, _ = imports_of(pkg / "compare" / "core.py", modules)
    finally:
        SRC = saved
    found = {(e.target, e.module_level) for e in edges}
    assert found == {
        ("zhisuan.errors", True),
        ("zhisuan.graph.index", True),
        ("zhisuan.compare.metrics", True),
        ("zhisuan.report", False),
    }
