"""No import circles among cnnlab's modules, Python or JavaScript.

Every import statement counts, wherever it stands (at the top, inside a function, under ``if``): a circle
that only closes at call time is still two modules that cannot be read, tested or moved one without the
other.

How an import becomes an edge ``importer -> imported``:

* ``import a.b.c`` and ``from a.b.c import name`` give an edge to the module ``a.b.c``; when ``name`` is
  itself a submodule (``from . import files``, ``from ..layers import conv``) the edge goes to that
  submodule instead, not to the package.
* A package's ``__init__`` is the module named by the package (``cnnlab.layers``). Its own imports are edges
  like any other's, but importing a submodule ``a.b.c`` is not an edge to ``a.b``'s ``__init__``: Python does
  run it first, yet an ``__init__`` that re-exports its submodules depends on them, not they on it. A
  module that imports a name from the package itself (``from ..layers import LAYERS``) does depend on the
  ``__init__`` and so, through it, on everything the ``__init__`` imports.
* Only imports of cnnlab's own modules are read; the standard library and third-party packages are leaves.

JavaScript: every ``import ... from "./x.js"`` (and ``import("./x.js")``) in ``cnnlab/serve/static`` is an
edge between the two files.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnlab"
STATIC = PACKAGE / "serve" / "static"


def module_names():
    """{dotted module name: path} for every ``.py`` file under cnnlab/ (a package is named by its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def python_imports(name, path, modules):
    """The cnnlab modules that the module ``name`` (read from ``path``) imports, by the rules above."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def python_graph():
    modules = module_names()
    return {name: python_imports(name, path, modules) for name, path in modules.items()}


def js_graph():
    pattern = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']\./([\w.-]+\.js)["']""")
    return {path.name: set(pattern.findall(path.read_text(encoding="utf-8"))) for path in STATIC.glob("*.js")}


def circles(graph):
    """The strongly connected components of more than one node (and self-loops), each as a sorted tuple (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def describe(found, graph):
    lines = []
    for component in found:
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
        lines.append(f"{', '.join(component)}:\n    " + "\n    ".join(edges))
    return "\n".join(lines)


def test_the_graph_reader_sees_imports_inside_functions_and_relative_submodules():
    graph = python_graph()
    assert "cnnlab.layers.conv" in graph["cnnlab.layers"]                  # from .conv import Conv2D
    assert "cnnlab" not in graph["cnnlab.layers.conv"]                     # a submodule is not its package
    assert {"cnnlab.onnx.exporter", "cnnlab.onnx.importer"} <= graph["cnnlab.onnx"]   # imports inside functions
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]
    assert circles({"a": {"a"}}) == [("a",)] and circles({"a": {"b"}, "b": set()}) == []
    assert js_graph()["app.js"] >= {"api.js", "draw.js"}


def test_no_python_module_imports_itself_back():
    graph = python_graph()
    found = circles(graph)
    assert not found, "import circles among cnnlab's modules:\n" + describe(found, graph)


def test_no_javascript_module_imports_itself_back():
    graph = js_graph()
    found = circles(graph)
    assert not found, "import circles among cnnlab/serve/static/*.js:\n" + describe(found, graph)
