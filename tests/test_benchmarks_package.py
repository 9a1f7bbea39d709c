"""benchmarks/ is a small package: every module imports, none is long, none reaches into amp_tf.cli.

Its layers (harness, speed, quality, page) and their import rules: tests/test_benchmarks_layers.py."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
#: The layers' modules (benchmarks/contract/ has its own tests).
LAYERS = ("harness", "speed", "quality", "page")
MODULES = sorted([BENCH / "__init__.py", *(p for layer in LAYERS for p in (BENCH / layer).glob("*.py"))])


def _name(path):
    """`benchmarks/speed/peer.py` -> "benchmarks.speed.peer" (a package: its own name)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _id(path):
    return str(path.relative_to(BENCH))
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
    names = {_name(p) for p in MODULES}
    assert {"benchmarks", "benchmarks.harness.timing", "benchmarks.speed.main", "benchmarks.speed.peer",
            "benchmarks.quality.ood", "benchmarks.page.tables"} <= names


@pytest.mark.parametrize("path", MODULES, ids=_id)
def test_module_imports(path):
    if path.stem == "peer_torch":
        pytest.importorskip("torch")
    module = importlib.import_module(_name(path))
    assert module.__doc__, f"{path.name}: no module docstring"


@pytest.mark.parametrize("path", MODULES, ids=_id)
def test_no_long_files(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name}: {n} lines (> {MAX_LINES}); split it by concern"


@pytest.mark.parametrize("path", MODULES, ids=_id)
def test_no_cli_imports_no_argparse_internals_no_sys_path(path):
    bad = [m for m in _imports(path) if m == "amp_tf.cli" or m.startswith("amp_tf.cli.")]
    assert not bad, f"{path.name} imports {bad}: build TrainConfig and data directly"
    assert not [m for m in _imports(path) if m.startswith(".")], f"{path.name}: use absolute imports"
    text = path.read_text()
    assert "_actions" not in text, f"{path.name} reads argparse's private _actions"
    assert "sys.path" not in text, f"{path.name} edits sys.path"


def test_harness_doctests():
    import doctest

    from benchmarks.harness import machine, results, timing

    for module in (timing, machine, results):
        r = doctest.testmod(module)
        assert r.attempted >= 1 and r.failed == 0, module.__name__


def test_alternate_rotates_the_order_and_keeps_every_sample():
    from benchmarks.harness import timing

    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    res = timing.alternate(fns, rounds=3, warmup=0)
    assert calls == list("abc" "bca" "cab")
    assert all(len(r["samples"]) == 3 and r["min_s"] <= r["median_s"] for r in res.values())


def test_the_import_checks_can_fail(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from amp_tf.cli.common import base_parser\nimport amp_tf.cli\n")
    assert sorted(_imports(p)) == ["amp_tf.cli", "amp_tf.cli.common", "amp_tf.cli.common.base_parser"]


@pytest.mark.slow
def test_run_as_a_path_names_the_module_command():
    r = subprocess.run([sys.executable, str(BENCH / "speed" / "main.py"), "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode != 0
    assert "python -m benchmarks.speed" in r.stderr


def test_speed_against_answers_help_and_parses_before_tensorflow():
    code = ("import sys; from benchmarks.speed import main as speed, against as s; "
            "a = s.parse_args(['--against', 'HEAD~1', '--quick']); "
            "assert speed.wants_against(['--quick', '--against=x']) and not speed.wants_against(['--quick']); "
            "print(a.rounds, a.n_train, ','.join(a.measures), 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "1280", "train,train_step,vanilla,amp,amp_call,savedmodel,tflite", "False"]
    r = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--against", "HEAD", "--help"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--against REV" in r.stdout and "benchmarks.speed.against" in r.stdout


def test_speed_against_ratios_are_speed_ratios():
    from benchmarks.speed.against import summarise

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
    from benchmarks.harness.machine import vector_extensions

    amx = vector_extensions({"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16"})
    assert amx["summary"] == "AVX2, AVX-512 (F, VNNI), AMX (TILE, BF16)" and amx["avx2"]
    assert vector_extensions({"avx2"})["summary"] == "AVX2, no AVX-512, no AMX"


@pytest.mark.slow
def test_speed_against_times_two_trees_side_by_side(tmp_path):
    # this checkout as it is vs the committed HEAD, one cheap measure, one round: the protocol works
    r = subprocess.run([sys.executable, "-m", "benchmarks.speed.against", "--head", ".", "--against", "HEAD",
                        "--measures", "vanilla,tflite", "--rounds", "1", "--min-sample-s", "0.05",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vector extensions:" in r.stdout and "vanilla inference" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["measures"]) == {"vanilla", "tflite"} and res["measures"]["vanilla"]["ratio"] > 0
    assert (tmp_path / "r.md").read_text().startswith("# Speed of ")
    assert not [ln for ln in subprocess.run(["git", "worktree", "list"], capture_output=True, text=True,
                                            cwd=ROOT).stdout.splitlines() if "amp_tf_against_" in ln]
