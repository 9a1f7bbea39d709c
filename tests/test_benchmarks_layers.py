"""The benchmarks' layers (benchmarks/__init__.py), read from the source with `ast` (no TensorFlow):

* `benchmarks.harness` imports no other benchmark module;
* `benchmarks.speed` and `benchmarks.quality` import the harness, never each other;
* `benchmarks.page` (BENCHMARKS.md's tables, the verdicts) may import all three; nothing imports it;
* no import cycle among the modules; every module lives in a layer's folder;
* every command parses its flags before TensorFlow is imported (`--help` and a wrong flag answer at once).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
#: layer -> the other layers it may import. benchmarks/contract/ is not a layer of these (its own tests).
MAY_IMPORT = {"harness": set(), "speed": {"harness"}, "quality": {"harness"}, "page": {"harness", "speed", "quality"}}
#: Run by `benchmarks.speed.against` as a script with a JSON argument: no flags, no --help.
NOT_COMMANDS = {"benchmarks.speed.against_worker"}
HEAVY = ("tensorflow", "keras", "torch", "jax", "ai_edge_litert")


def modules(bench=BENCH):
    """`{dotted name: path}` of every module in the layers' folders (a package's `__init__` by its own name)."""
    out = {}
    for layer in MAY_IMPORT:
        for path in sorted((bench / layer).glob("*.py")):
            parts = path.relative_to(bench.parent).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path, known):
    """The benchmark modules `path` imports, at module level or inside a function: `from benchmarks.speed import
    peer` names `benchmarks.speed.peer` (a module in `known`), `from benchmarks.harness import ROOT` the package."""
    got = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue  # relative imports are refused by tests/test_benchmarks_package.py
        got |= {n for n in names if n.startswith("benchmarks.")}
    return got


def graph(bench=BENCH):
    known = modules(bench)
    return {name: imports(path, known) - {name} for name, path in known.items()}


def violations(edges):
    """One line per import that goes sideways or up a layer."""
    out = []
    for name, deps in sorted(edges.items()):
        layer = name.split(".")[1]
        for dep in sorted(deps):
            other = dep.split(".")[1]
            if other != layer and other not in MAY_IMPORT[layer]:
                allowed = ", ".join(sorted(MAY_IMPORT[layer])) or "no other benchmark layer"
                out.append(f"{name} imports {dep} ({layer} may import: {allowed})")
    return out


def cycles(edges):
    """Each import cycle once, as a list of module names (start = end)."""
    found, done = [], set()

    def visit(node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                if frozenset(cycle) not in done:
                    done.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt in edges and len(path) < len(edges):
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    return found


def test_every_module_is_in_a_layer():
    assert sorted(p.name for p in BENCH.glob("*.py")) == ["__init__.py"]
    names = set(modules())
    assert {f"benchmarks.{layer}" for layer in MAY_IMPORT} <= names  # each layer a package with its docstring
    assert {"benchmarks.harness.timing", "benchmarks.speed.main", "benchmarks.quality.ood",
            "benchmarks.page.tables"} <= names


def test_each_layer_imports_only_the_layers_below():
    assert not violations(graph()), "\n".join(violations(graph()))


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_pytorch_reference_imports_nothing_of_ours():
    edges = graph()  # peer_models -> peer_torch, never back: the settings come in as arguments
    assert edges["benchmarks.speed.peer_torch"] == set()
    assert "benchmarks.speed.peer_torch" in edges["benchmarks.speed.peer_models"]


def test_the_checks_can_fail(tmp_path):
    bench = tmp_path / "benchmarks"
    files = {
        "harness/__init__.py": "",
        "harness/timing.py": "def f():\n    from benchmarks.page import tables\n",  # up a layer
        "speed/__init__.py": "",
        "speed/core.py": "from benchmarks.quality.ood import x\nfrom benchmarks.speed import peer\n",  # sideways
        "speed/peer.py": "import benchmarks.speed.core\n",  # core -> peer -> core
        "quality/__init__.py": "",
        "quality/ood.py": "from benchmarks.harness import results\n",
        "page/__init__.py": "",
        "page/tables.py": "from benchmarks.speed import core\nfrom benchmarks.quality import ood\n",
    }
    for rel, text in files.items():
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(text)
    edges = graph(bench)
    assert edges["benchmarks.speed.core"] == {"benchmarks.quality.ood", "benchmarks.speed.peer"}
    assert [v.split(" (")[0] for v in violations(edges)] == [
        "benchmarks.harness.timing imports benchmarks.page.tables",
        "benchmarks.speed.core imports benchmarks.quality.ood"]
    assert cycles(edges) == [["benchmarks.speed.core", "benchmarks.speed.peer", "benchmarks.speed.core"]]
    assert not violations({"benchmarks.page.tables": edges["benchmarks.page.tables"]})  # the page reads both


def commands():
    """The modules run as `python -m benchmarks....` (a package's `__main__` under the package's name)."""
    out = []
    for name, path in modules().items():
        if name not in NOT_COMMANDS and '\nif __name__ == "__main__":\n' in path.read_text():
            out.append(name.removesuffix(".__main__"))
    return sorted(set(out))


def test_every_command_parses_before_tensorflow():
    """`main(["--help"])` and `main(["--no-such-flag"])` of every command, in one process: argparse answers
    (exit 0, exit 2) and TensorFlow, Keras and PyTorch are still not imported."""
    names = commands()
    assert {"benchmarks.speed", "benchmarks.speed.against", "benchmarks.quality.ood", "benchmarks.quality.converged",
            "benchmarks.page", "benchmarks.page.verdicts"} <= set(names)
    code = f"""
import contextlib, importlib, io, json, sys
codes = {{}}
for name in {names!r}:
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):
        module = importlib.import_module(name + ".__main__")
    for argv in (["--help"], ["--no-such-flag"]):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                module.main(argv)
            codes[name + " " + argv[0]] = "returned"
        except SystemExit as e:
            codes[name + " " + argv[0]] = e.code
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], f"parsing the commands' flags imported {got['heavy']}"
    wrong = {k: v for k, v in got["codes"].items() if v != (0 if k.endswith("--help") else 2)}
    assert not wrong, f"expected exit 0 for --help and 2 for a wrong flag: {wrong}"
