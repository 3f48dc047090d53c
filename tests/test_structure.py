"""The package's shape: no import cycle among tl_research's modules, each wing importing only from the wings
above it in the package map (tl_research/__init__.py), and no function over 80 lines.

Imports are read from the source (nothing is imported), at module level and inside functions alike, absolute
and relative: a function-local import is how a cycle usually hides, so it counts as an edge here too.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tl_research"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every dotted name an import statement may refer to: the module itself and, for `from X import n`,
    X.n (which is a module when n is a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1 more packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a module's own parent packages left out: importing a
    submodule runs them first anyway, and they are not what a cycle is about)."""
    mods = _modules()
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            for t in _imported(node, m, f.name == "__init__.py"):
                if t in mods and t != m and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'module.qualified_name (n lines)' for every function or method longer than `limit` lines."""
    out = []

    def walk(node, module, prefix):
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    n = child.end_lineno - child.lineno + 1
                    if n > limit:
                        out.append(f"{module}{name} ({n} lines)")
            walk(child, module, name)

    for m, f in _modules().items():
        walk(ast.parse(f.read_text(), filename=str(f)), m, "")
    return sorted(out)


def test_the_walk_sees_function_local_and_relative_imports():
    # guards the walker itself: a cycle hidden in a function-local or relative import must not be missed
    tree = ast.parse("def f():\n    from tl_research.data import pipeline\nfrom . import augment\n"
                     "from .. import errors\n")
    seen = [t for node in ast.walk(tree) for t in _imported(node, "tl_research.data.folder", False)]
    assert {"tl_research.data.pipeline", "tl_research.data.augment", "tl_research.errors"} <= set(seen)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def wing_order() -> list[str]:
    """The wings in the order the package map (tl_research/__init__.py) lists them, lowest first."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    return [line.split()[0].rstrip("/") for line in doc.splitlines() if line.startswith("    ") and "/" in line.split()[0]]


def test_a_wing_imports_only_from_the_wings_above_it():
    order = wing_order()
    wings = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(order) == wings, f"the package map lists {sorted(order)}, the package has {sorted(wings)}"
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
              if m.count(".") and t.count(".") and m.split(".")[1] in order and t.split(".")[1] in order
              and order.index(t.split(".")[1]) > order.index(m.split(".")[1])]
    assert not upward, "imports from a wing below: " + "; ".join(sorted(upward))


def test_no_function_is_over_80_lines():
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(found)


def test_importing_the_package_starts_no_jax_backend():
    # jax.distributed.initialize (multi-node runs) must come before anything starts a backend: a module-level
    # jnp array anywhere the job imports would start one at import time
    import subprocess
    import sys
    code = ("import importlib, pkgutil, tl_research\n"
            "from jax._src import xla_bridge\n"
            "for m in pkgutil.walk_packages(tl_research.__path__, 'tl_research.'):\n"
            "    importlib.import_module(m.name)\n"
            "    assert not xla_bridge._backends, m.name\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
