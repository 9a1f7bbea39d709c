"""benchmarks/ is a small package: every module imports, none is long, none reaches into amp_tf.cli."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
MODULES = sorted(p for p in BENCH.glob("*.py"))
MAX_LINES = 450


def _imports(path):
    """Every module name `path` imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append("." * node.level + (node.module or ""))
    return out


def test_the_package_has_the_benchmarks_and_the_harness():
    names = {p.stem for p in MODULES}
    assert {"__init__", "harness", "speed", "peer_speed", "ood_quality"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports(path):
    if path.stem == "peer_torch":
        pytest.importorskip("torch")
    name = "benchmarks" if path.stem == "__init__" else f"benchmarks.{path.stem}"
    module = importlib.import_module(name)
    assert module.__doc__, f"{path.name}: no module docstring"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_long_files(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name}: {n} lines (> {MAX_LINES}); split it by concern"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_cli_imports_no_argparse_internals_no_sys_path(path):
    bad = [m for m in _imports(path) if m == "amp_tf.cli" or m.startswith("amp_tf.cli.")]
    assert not bad, f"{path.name} imports {bad}: build TrainConfig and data directly"
    assert not [m for m in _imports(path) if m.startswith(".")], f"{path.name}: use absolute imports"
    text = path.read_text()
    assert "_actions" not in text, f"{path.name} reads argparse's private _actions"
    assert "sys.path" not in text, f"{path.name} edits sys.path"


def test_harness_doctests():
    import doctest

    from benchmarks import harness

    r = doctest.testmod(harness)
    assert r.attempted >= 3 and r.failed == 0


def test_alternate_rotates_the_order_and_keeps_every_sample():
    from benchmarks import harness

    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    res = harness.alternate(fns, rounds=3, warmup=0)
    assert calls == list("abc" "bca" "cab")
    assert all(len(r["samples"]) == 3 and r["min_s"] <= r["median_s"] for r in res.values())


def test_the_import_checks_can_fail(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from amp_tf.cli.common import base_parser\nimport amp_tf.cli\n")
    assert sorted(_imports(p)) == ["amp_tf.cli", "amp_tf.cli.common", "amp_tf.cli.common.base_parser"]


@pytest.mark.slow
def test_run_as_a_path_names_the_module_command():
    r = subprocess.run([sys.executable, str(BENCH / "speed.py"), "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode != 0
    assert "python -m benchmarks.speed" in r.stderr


def test_speed_against_answers_help_and_parses_before_tensorflow():
    code = ("import sys; from benchmarks import speed, speed_against as s; "
            "a = s.parse_args(['--against', 'HEAD~1', '--quick']); "
            "assert speed.wants_against(['--quick', '--against=x']) and not speed.wants_against(['--quick']); "
            "print(a.rounds, a.n_train, ','.join(a.measures), 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "1280", "train,train_step,vanilla,amp,amp_call,savedmodel,tflite", "False"]
    r = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--against", "HEAD", "--help"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--against REV" in r.stdout and "speed_against" in r.stdout


def test_speed_against_ratios_are_speed_ratios():
    from benchmarks.speed_against import summarise

    samples = {"vanilla": {"new": [0.010, 0.012, 0.011], "old": [0.020, 0.022, 0.021]},
               "savedmodel": {"new": [0.004, 0.004, 0.004], "old": [0.002, 0.002, 0.002]}}
    cpu = {m: {k: [2 * t for t in v] for k, v in by.items()} for m, by in samples.items()}
    out = summarise(samples, cpu, {"vanilla": 128, "savedmodel": 1}, "new", "old")
    v, s = out["vanilla"], out["savedmodel"]
    assert v["new"]["images_per_s"] == pytest.approx(128 / 0.011)
    assert v["ratio"] == pytest.approx(0.021 / 0.011) and v["met"] is True  # new is faster: > 1
    assert s["new"]["ms_per_image"] == pytest.approx(4.0) and s["ratio"] == pytest.approx(0.5)
    assert s["ratio_cpu"] == pytest.approx(0.5) and "met" not in s
    assert v["verdict"] == "met"
    samples["vanilla"]["new"] = [0.0213, 0.0213, 0.0213]  # 1.4 % slower: within noise, not met
    samples["amp"] = {"new": [0.03] * 3, "old": [0.02] * 3}  # 1.5x slower: a regression
    out = summarise(samples, cpu | {"amp": samples["amp"]}, {"vanilla": 128, "savedmodel": 1, "amp": 128}, "new", "old")
    assert out["vanilla"]["met"] is False and out["vanilla"]["verdict"].startswith("within noise")
    assert out["amp"]["verdict"] == "MISSED"


def test_vector_extensions_from_cpuinfo_flags():
    from benchmarks.harness import vector_extensions

    amx = vector_extensions({"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16"})
    assert amx["summary"] == "AVX2, AVX-512 (F, VNNI), AMX (TILE, BF16)" and amx["avx2"]
    assert vector_extensions({"avx2"})["summary"] == "AVX2, no AVX-512, no AMX"


@pytest.mark.slow
def test_speed_against_times_two_trees_side_by_side(tmp_path):
    # this checkout as it is vs the committed HEAD, one cheap measure, one round: the protocol works
    r = subprocess.run([sys.executable, "-m", "benchmarks.speed_against", "--head", ".", "--against", "HEAD",
                        "--measures", "vanilla,tflite", "--rounds", "1", "--min-sample-s", "0.05",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vector extensions:" in r.stdout and "vanilla inference" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["measures"]) == {"vanilla", "tflite"} and res["measures"]["vanilla"]["ratio"] > 0
    assert (tmp_path / "r.md").read_text().startswith("# Speed of ")
    assert not [ln for ln in subprocess.run(["git", "worktree", "list"], capture_output=True, text=True,
                                            cwd=ROOT).stdout.splitlines() if "amp_tf_against_" in ln]


def _benchmark_edges():
    """`{module: {benchmarks modules it imports}}`, function-level imports included."""
    names = {p.stem for p in MODULES}
    edges = {}
    for path in MODULES:
        got = set()
        for m in _imports(path):
            parts = m.split(".")
            if parts[0] == "benchmarks" and len(parts) > 1:
                got.add(parts[1] if parts[1] in names else None)
        edges[path.stem] = got - {None, path.stem}
    return edges


def test_no_import_cycle_in_the_benchmarks():
    # e.g. peer_models <-> peer_torch: the PyTorch reference takes the settings as arguments
    edges = _benchmark_edges()

    def cycle_from(start, node, seen):
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                rest = cycle_from(start, nxt, seen)
                if rest:
                    return [node] + rest
        return None

    cycles = [c for c in (cycle_from(m, m, set()) for m in sorted(edges)) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert edges["peer_torch"] == set() and "peer_torch" in edges["peer_models"]
