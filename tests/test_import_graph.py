"""No import cycle in `amp_tf`, and `amp_tf/models/` stays plain Keras (issue 19, "No circle").

Pure `ast`: nothing under `amp_tf/` is imported (but by the registration tests, in fresh
interpreters). The graph has one node per module (`amp_tf/x/__init__.py`
is the node `amp_tf.x`) and an edge A -> B for every import of B that A's source holds:

* `import amp_tf.x.y` and `from amp_tf.x import y` (y a module: `amp_tf.x.y`,
  else a name in `amp_tf.x`), relative imports too, at module level *and* inside
  functions, methods and classes (a function-level import is a dependency all the
  same, only a later one); `if TYPE_CHECKING:` blocks are skipped;
* `importlib.import_module("amp_tf.x")` with a literal name (and a literal package
  for a relative name).

An edge goes to the module named, not to the packages above it: Python runs
`amp_tf/x/__init__.py` before `amp_tf/x/y.py` whatever imports it, so counting
parents would make every package a cycle with its own modules.

The package `amp_tf` (`amp_tf/__init__.py`) is the top layer: `import_all` (run by
itself once Keras is imported) loads every public name and every Keras serializable on purpose (by names held in data,
which `ast` cannot follow), so the graph gives it an edge to every module. A
module that imports the package itself (`import amp_tf; amp_tf.import_all()`,
`from amp_tf import __version__`) therefore closes a cycle: import the module
that defines what you need instead (`amp_tf.serializables.register_all` registers
every serializable).
"""
from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "amp_tf"
#: The method and pipeline layers, which `amp_tf/models/` (plain Keras backbones) must not reach.
ABOVE_MODELS = ("amp_tf.method.anchoring", "amp_tf.run.training", "amp_tf.method.predictor", "amp_tf.run.pipeline")


# --------------------------------------------------------------------------- #
# The graph
# --------------------------------------------------------------------------- #

def module_files(root=ROOT, package=PACKAGE):
    """{module name: path} of every .py file under `root/package` (packages by their `__init__`)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree):
    """Every node of `tree`, nested scopes included, except the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name, modules):
    """`name` if it is a module, else its longest prefix that is one (None outside the package)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _absolute(module, is_package, level, name):
    """The absolute name of a relative import `from <level dots><name> import ...` written in `module`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _import_module_call(node):
    """(name, package) of `importlib.import_module("literal"[, "literal"])`, else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called != "import_module" or not node.args:
        return None
    args = [*node.args, *(k.value for k in node.keywords if k.arg == "package")]
    if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args[:2]):
        return None
    return args[0].value, (args[1].value if len(args) > 1 else None)


def imports_of(module, source, modules, is_package=False):
    """[(target module, line)] of every import in `source` (the text of `module`) that names a module
    of `modules`: module- and function-level imports, relative ones, literal `import_module` calls."""
    found = []
    for node in _nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module) if node.level else node.module
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        elif (call := _import_module_call(node)) is not None:
            name, package = call
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                name = _absolute(package or "", True, level, name.lstrip("."))
            names = [name]
        else:
            continue
        found += [(target, node.lineno) for n in names if (target := _known(n, modules))]
    return found


def import_graph(root=ROOT, package=PACKAGE):
    """{module: {imported module: [lines]}} for every module of `package`; the package itself
    (the top layer, see the module docstring) gets an edge to every module, at line 0."""
    files = module_files(root, package)
    graph = {}
    for module, path in files.items():
        edges = graph.setdefault(module, {})
        for target, line in imports_of(module, path.read_text(), files, path.name == "__init__.py"):
            edges.setdefault(target, set()).add(line)
    graph = {m: {t: sorted(at) for t, at in edges.items()} for m, edges in graph.items()}
    graph[package] = {m: [0] for m in files if m != package}
    return graph, files


def strongly_connected(graph):
    """The strongly connected components of `graph` ({node: iterable of nodes}), Tarjan's algorithm
    without recursion; each component a sorted list."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
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
                    components.append(sorted(component))
    return components


def cycles(graph):
    """The components with more than one module, and the modules that import themselves."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph.get(c[0], ())]


def describe(components, graph, files=None, top=PACKAGE):
    """A readable list of every cycle and the edges (file:line) that make it."""
    lines = []
    for component in sorted(components, key=lambda c: (-len(c), c)):
        members = set(component)
        lines.append(f"cycle of {len(component)} module(s): {', '.join(component)}")
        if top in members:
            lines.append(f"  ({top} -> every module: the package is the top layer; the edges into it are upward)")
        for source in component:
            if source == top:
                continue
            for target, at in sorted(graph[source].items()):
                if target in members:
                    where = files[source].relative_to(ROOT) if files else source
                    lines.append(f"  {source} -> {target}    ({where}:{', '.join(map(str, sorted(at)))})")
    return "\n".join(lines)


def reach(graph, start):
    """{module reachable from `start`: the path to it (a list of modules)}."""
    paths, todo = {start: [start]}, [start]
    while todo:
        node = todo.pop()
        for child in graph.get(node, ()):
            if child not in paths:
                paths[child] = [*paths[node], child]
                todo.append(child)
    return paths


# --------------------------------------------------------------------------- #
# The cycle finder itself (so the real test can fail)
# --------------------------------------------------------------------------- #

def test_cycle_finder_on_a_synthetic_graph():
    graph = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3, 9], "d": [4]}, "d": {}, "e": {"e": [5]},
             "f": {"d": [6]}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]
    text = describe(cycles(graph), graph)
    assert "cycle of 3 module(s): a, b, c" in text and "c -> a    (c:3, 9)" in text and "c -> d" not in text
    assert "cycle of 1 module(s): e" in text
    assert cycles({"a": {"b": [1]}, "b": {}}) == []


def test_imports_are_resolved(tmp_path):
    """Module- and function-level, relative, `from package import module`, literal import_module,
    TYPE_CHECKING skipped; an import of the package itself is an upward edge into a cycle."""
    sources = {
        "pkg/__init__.py": "",
        "pkg/low.py": "import os\n",
        "pkg/sub/__init__.py": "from . import leaf\n",
        "pkg/sub/leaf.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.mid\n"
                            "def f():\n    from ..low import x\n"),
        "pkg/mid.py": ("import importlib\nfrom pkg import low, sub\nfrom pkg.sub.leaf import f\n"
                       "def g():\n    importlib.import_module('pkg.sub.leaf')\n"
                       "    importlib.import_module('.low', 'pkg')\n    import pkg\n    pkg.go()\n"),
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph, _ = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.leaf": [1]}
    assert graph["pkg.sub.leaf"] == {"pkg.low": [5]}
    assert {k: sorted(v) for k, v in graph["pkg.mid"].items()} == {
        "pkg.low": [2, 6], "pkg.sub": [2], "pkg.sub.leaf": [3, 5], "pkg": [7]}
    assert cycles(graph) == [["pkg", "pkg.mid"]]


# --------------------------------------------------------------------------- #
# amp_tf
# --------------------------------------------------------------------------- #

@functools.cache
def amp_tf_graph():
    return import_graph()


def test_amp_tf_has_no_import_cycle():
    graph, files = amp_tf_graph()
    assert len(files) > 50 and graph["amp_tf.run.training"], "the graph lost its modules or edges"
    found = cycles(graph)
    assert not found, "import cycles in amp_tf (each layer may import only the layers below it):\n" + describe(
        found, graph, files)


#: The layers of amp_tf, lowest first (docs/architecture.md): a module imports only its own layer or lower ones.
#: `base` is the top-level modules (recipe, config, errors, contract, compat, _version); the package itself and
#: `amp_tf.serializables` (which imports every module that defines a Keras serializable, on purpose) stand above all.
LAYERS = ("base", "low", "method", "detection", "serve", "run", "cli")
TOP = ("amp_tf", "amp_tf.serializables")


def layer_of(module):
    """The layer of a module name (None for the package and `serializables`)."""
    if module in TOP:
        return None
    part = module.split(".")[1]
    if part in ("data", "models"):
        return "low"
    return part if part in LAYERS else "base"


def upward_imports(graph):
    """`["a -> b (line)"]` for every import of a higher layer."""
    bad = []
    for a, targets in graph.items():
        for b, lines in targets.items():
            la, lb = layer_of(a), layer_of(b)
            if la and lb and LAYERS.index(lb) > LAYERS.index(la):
                bad.append(f"{a} ({la}) -> {b} ({lb}), line {lines[0]}")
    return bad


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    graph, files = amp_tf_graph()
    top = [m for m in files if m.count(".") == 1 and not (files[m].name == "__init__.py")]
    assert len(top) <= 8, f"amp_tf/ top level holds {len(top)} modules (at most 8; put a module in its layer): {top}"
    bad = upward_imports(graph)
    assert not bad, "imports that go up a layer (docs/architecture.md):\n" + "\n".join(sorted(bad))
    assert {layer_of(m) for m in files} >= set(LAYERS)


def test_the_layer_check_can_fail():
    graph = {"amp_tf.method.predictor": {"amp_tf.run.pipeline": [3]}, "amp_tf.run.pipeline": {"amp_tf.recipe": [1]}}
    assert upward_imports(graph) == ["amp_tf.method.predictor (method) -> amp_tf.run.pipeline (run), line 3"]


def test_old_flat_module_paths_still_import_the_same_modules():
    """`amp_tf.export`, `amp_tf.detectors.shipped`, ... (README, user code) are the modules of the layers."""
    import importlib

    import amp_tf

    for layer, modules in amp_tf.MOVED.items():
        for m in modules:
            assert importlib.import_module(f"amp_tf.{m}") is importlib.import_module(f"amp_tf.{layer}.{m}"), m
    from amp_tf.detectors import select_detector  # a submodule of a moved package, by its old path
    from amp_tf.export import export_for_serving

    assert select_detector.__module__ == "amp_tf.detection.detectors.selection"
    assert export_for_serving.__module__ == "amp_tf.serve.export"


def test_models_import_nothing_from_the_method_or_pipeline():
    """`amp_tf/models/` is plain Keras: backbones, their statistics, `anchor_backbone`; what builds
    an `AnchoredModel` lives in the method layer. Checked on every path, not only direct imports."""
    graph, files = amp_tf_graph()
    bad = []
    for module in (m for m in files if m == "amp_tf.models" or m.startswith("amp_tf.models.")):
        paths = reach(graph, module)
        bad += [" -> ".join(paths[m]) for m in ABOVE_MODELS if m in paths]
    assert not bad, "amp_tf/models/ reaches the method or pipeline layer:\n" + "\n".join(bad)


def test_register_all_imports_every_module_that_defines_a_keras_serializable():
    """`amp_tf.serializables.register_all` is what loading a model relies on inside the package."""
    graph, files = amp_tf_graph()
    defining = {m for m, path in files.items() if "@keras.saving.register_keras_serializable" in path.read_text()}
    assert len(defining) >= 8, defining
    missing = defining - set(reach(graph, "amp_tf.serializables"))
    assert not missing, f"register_all does not import {sorted(missing)}"


#: Run in fresh interpreters: `import amp_tf` imports no TensorFlow; the first import of Keras, TensorFlow or
#: a module that imports them registers every serializable and every score, whatever the order.
REGISTERS = """
    import sys
    first = sys.argv[1]
    if first == "amp_tf":
        import amp_tf
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        import tensorflow
    else:  # a submodule that imports Keras while it runs: registration waits until it has run
        import importlib
        importlib.import_module(first)
        import amp_tf
    import keras
    for name in ("AnchoredModel", "AnchoredPredictor", "FoldedAnchoredPredictor", "ServingHead",
                 "PixelNormalization", "BatchNorm", "Conv2D", "CoupledSGD", "ConsistencyAugment"):
        assert keras.saving.get_registered_object("amp_tf>" + name) is not None, name
    assert amp_tf.anchored_model.__module__ == "amp_tf.method.anchoring"
    assert "mahalanobis" in amp_tf.method.scores.names()  # the baselines are registered too
    print("ok", amp_tf.__version__)
"""


@pytest.mark.parametrize("first", ["amp_tf", "amp_tf.method.scores"])
def test_keras_arriving_registers_every_serializable_in_any_order(first):
    """`import amp_tf` is light in every process (no check of who imported it); Keras' arrival registers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(REGISTERS), first], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stderr[-3000:]


def private_reaches(files):
    """`["file:line name"]` where a module of amp_tf uses another amp_tf module's private name: `mod._x` on a
    module it imported, or `from amp_tf.m import _x` (its own package's `__init__` aside)."""
    bad = []
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        mods = set()
        for node in _nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amp_tf"):
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if target in files:
                        mods.add(a.asname or a.name)
                    elif a.name.startswith("_") and not a.name.startswith("__") and not module.startswith(node.module):
                        bad.append(f"{path.name}:{node.lineno} {target}")
            elif isinstance(node, ast.Import):
                mods.update(a.asname for a in node.names if a.asname and a.name in files)
        for node in _nodes(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in mods
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return bad


def test_no_module_reaches_into_another_modules_private_names():
    graph, files = amp_tf_graph()
    bad = private_reaches(files)
    assert not bad, "private names used from another module (make them public or move the code):\n" + "\n".join(bad)


def test_the_private_name_check_can_fail(tmp_path):
    pkg = tmp_path / "amp_tf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_x = 1\n")
    (pkg / "b.py").write_text("from amp_tf import a\nfrom amp_tf.a import _x\nprint(a._x)\n")
    found = private_reaches(module_files(tmp_path))
    assert len(found) == 2 and any("a._x" in f for f in found), found
