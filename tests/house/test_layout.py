"""The package's shape, checked with `ast`: no import circle, no use of another module's underscore names, and
the run folder's layout spelled out in one module (audiovae/io/run_folder.py) only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "audiovae"
RUN_FOLDER_MODULE = PACKAGE / "io" / "run_folder.py"
LAYOUT_NAMES = {"checkpoints", "prior", "metrics.jsonl", "recipe.yaml", "eval", "samples", "run.lock", "report", "anomaly"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(tree: ast.AST, name: str, modules: set[str]) -> set[str]:
    """Every audiovae module `name` imports, at module level or inside functions; not under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of `name`
                package = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package(name) else 0)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    found.add(target)
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    def is_package(module: str) -> bool:
        return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()

    visit(tree)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = python_files("audiovae")
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(ast.parse(p.read_text()), module_name(p), modules) for p in files}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from audiovae.b import X\n"
                     "def f():\n    from audiovae.c import y\n")
    assert imports_of(tree, "audiovae.a", {"audiovae.a", "audiovae.b", "audiovae.c"}) == {"audiovae.c"}
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40  # the whole package was read
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))


PUBLIC_UNDERSCORE_NAMES = {("os", "_exit")}  # documented in the standard library despite the underscore


def underscore_uses(path: Path) -> list[str]:
    """`x._name` on anything but self/cls, and `from m import _name`: another module's private names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and (owner, node.attr) not in PUBLIC_UNDERSCORE_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_uses_another_modules_underscore_names():
    assert underscore_uses(Path(__file__)) == []
    found = [use for path in python_files("audiovae", "bench", "tests") for use in underscore_uses(path)]
    assert found == []


def layout_uses(path: Path) -> list[str]:
    """Run-layout names used as path parts (`x / "checkpoints"`, Path("runs", "eval"), "prior/best.pt") and
    `.parent.parent`."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        parts: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = [node.left, node.right]
        elif isinstance(node, ast.Call) and (getattr(node.func, "id", None) == "Path"
                                             or getattr(node.func, "attr", None) in ("joinpath", "join")):
            parts = list(node.args)
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                pieces = set(part.value.replace("\\", "/").split("/"))
                if pieces & LAYOUT_NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {part.value!r}")
        if (isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Attribute)
                and node.value.attr == "parent"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .parent.parent")
    return found


def test_the_run_layout_is_spelled_out_in_the_run_folder_module_only():
    assert layout_uses(RUN_FOLDER_MODULE)  # the check finds them where they are
    found = [use for path in python_files("audiovae", "bench") if path != RUN_FOLDER_MODULE
             for use in layout_uses(path)]
    assert found == []
