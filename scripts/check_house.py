"""The house rules of issue 11, checked on the source: file and function sizes (a function's docstring does not count), import cycles, private
names imported across modules, and no argv built by library code.

    python scripts/check_house.py            # prints every finding; exit 1 if any
    python scripts/check_house.py --quiet    # exit status only

``tests/test_house.py`` runs it, so a change that breaks a rule fails the suite. A function may go
over the size limit if its first docstring line or a comment on its ``def`` line says why, with the
marker ``house: long because``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_unlearn"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
EXCUSE = "house: long because"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def function_findings(path: Path, tree: ast.Module, lines: list[str]) -> list[str]:
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node) or ""
            length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)  # the code, not its documentation
            excused = EXCUSE in lines[node.lineno - 1] or EXCUSE in doc
            if length > MAX_FUNCTION_LINES and not excused:
                findings.append(f"{path.relative_to(ROOT)}:{node.lineno}: function {node.name} has {length} lines "
                                f"(> {MAX_FUNCTION_LINES}; split it or say '{EXCUSE} ...')")
    return findings


def _docstring_lines(node: ast.AST) -> int:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def import_findings(path: Path, tree: ast.Module, graph: dict) -> list[str]:
    findings = []
    me = module_name(path)
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    for node in ast.walk(tree):  # function-local imports too: a cycle hidden in a function is still a cycle
        if id(node) in type_only:  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.ImportFrom):
            target = resolve(node, path)
            if target.startswith("hf_unlearn"):
                graph[me].add(target)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists():
                        graph[me].add(sub)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hf_unlearn"):
                    graph[me].add(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and resolve(node, path).startswith("hf_unlearn"):
            target = resolve(node, path)
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target != me:
                    findings.append(f"{path.relative_to(ROOT)}:{node.lineno}: private name {alias.name} imported "
                                    f"from {target} (make it public or move it)")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "parse_args":
            if node.args and isinstance(node.args[0], ast.List):
                findings.append(f"{path.relative_to(ROOT)}:{node.lineno}: parse_args([...]) builds argv in library code")
    return findings


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"


def cycles(graph: dict) -> list[list[str]]:
    """Import cycles among the package's modules (each reported once)."""
    found, seen = [], set()

    def visit(node, stack, on_stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or nxt == "hf_unlearn":  # the root runs before everything anyway
                continue
            if nxt in on_stack:
                cycle = stack[stack.index(nxt):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle + [nxt])
            elif nxt not in done:
                on_stack.add(nxt)
                visit(nxt, stack + [nxt], on_stack)
                on_stack.discard(nxt)
        done.add(node)

    done: set = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start})
    return found


def package_parents(graph: dict) -> None:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: they are edges too."""
    for module in list(graph):
        for target in list(graph[module]):
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph and parent != module and not module.startswith(parent + "."):
                    graph[module].add(parent)


def check() -> list[str]:
    findings, graph = [], defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        if "evaluate_modules" in path.parts:  # loaded by `evaluate.load(path)`, not imported
            continue
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES:
            findings.append(f"{path.relative_to(ROOT)}: {len(lines)} lines (> {MAX_FILE_LINES})")
        tree = ast.parse(text, filename=str(path))
        graph[module_name(path)]  # every module is a node
        findings += function_findings(path, tree, lines)
        findings += import_findings(path, tree, graph)
    package_parents(graph)
    findings += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return findings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    findings = check()
    if not args.quiet:
        print("\n".join(findings) or "house rules: all met")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
