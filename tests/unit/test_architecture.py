"""The shape of the code: imports follow the layering `launch -> pbt -> trainers -> distrib
-> compression` (nothing imports launch), and no modules import each other in a cycle,
counting imports inside functions too (only `if TYPE_CHECKING:` blocks are exempt)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["compression", "distrib", "trainers", "pbt", "launch"]  # each may import only those before it


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved to the deepest module that exists)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_imports_follow_the_layering(graph):
    against = sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                     if layer(target) > layer(module))
    assert not against, "imports against `launch -> pbt -> trainers -> distrib -> compression`:\n" + "\n".join(against)


def test_no_import_cycles(graph):
    cycles, state = [], {}

    def walk(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                walk(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path):
    """The checks above would fail on a cycle and on an import against the layering."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from launch.cli import main\n")
    assert imports_of("compression.bad", bad, {"launch.cli", "compression.bad"}) == {"launch.cli"}
    guarded = tmp_path / "guarded.py"
    guarded.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from launch.cli import main\n")
    assert imports_of("compression.guarded", guarded, {"launch.cli", "compression.guarded"}) == set()


def test_mpiexec_path_imports_neither_ray_nor_matplotlib():
    """`python -m launch run` under mpiexec: the CLI, the dispatcher and the mpiexec flavour
    (with the worker loop it runs) leave Ray and matplotlib unimported."""
    code = ("import sys, launch.cli, launch.backends, launch.backends.mpi; "
            "print(sorted(m for m in ('ray', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
