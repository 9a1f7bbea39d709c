import csv
import io
import json

import numpy as np
import pytest

from amp_tf.run import report
from amp_tf.detection.metrics import METRIC_KEYS, ood_metrics
from amp_tf.run import plots
from amp_tf.run.plots import plot_metric_vs_corruption, plot_metric_vs_level, plot_roc, roc_curve

SETS = {"digits": -2.0, "fmnist_blur_1": -0.4, "fmnist_blur_2": -1.0, "fmnist_jpeg_1": -0.2, "fmnist_jpeg_3": -0.5}
KEYS = {"anchored/amp": 1.0, "vanilla/msp": 0.6}  # separation factor per score
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(positive="id", seed=0, n=300):
    rng = np.random.default_rng(seed)
    score_values, scores = {}, {}
    for key, sep in KEYS.items():
        vals = {"id": rng.normal(0.0, 1.0, n)}
        for name, shift in SETS.items():
            vals[name] = rng.normal(sep * shift, 1.0, n // 2)
        score_values[key] = vals
        scores[key] = {s: ood_metrics(vals["id"], vals[s], positive=positive) for s in SETS}
    results = {
        "title": "Synthetic (ID) vs toy OOD suite",
        "id_set": "synthetic",
        "positive": positive,
        "seed": 7,
        "wall_time_s": 12.5,
        "versions": {"amp_tf": "0.1.0", "python": "3.11.7"},
        "config": {"epochs": 2, "lr": np.float32(0.1), "sizes": np.array([1, 2])},
        "models": {"anchored": {"id_accuracy": 0.912, "params": 123456, "train_time_s": 200.0},
                   "vanilla": {"id_accuracy": 0.915}},
        "scores": scores,
    }
    return results, score_values


@pytest.fixture(scope="module")
def run():
    return make_run()


# ------------------------------------------------------------------ summarize
def test_summarize_means_and_nothing_chosen_on_test(run):
    results, _ = run
    s = report.summarize(results)
    assert "summary" not in results  # input untouched
    keys = list(KEYS)
    for key in keys:
        for m in METRIC_KEYS:
            want = np.mean([results["scores"][key][name][m] for name in SETS])
            assert s["summary"][key][m] == pytest.approx(want, abs=1e-12)
    # the one "best" of a run is its shipped detector, chosen on validation: no test-mean pick
    assert "best" not in s and "best" not in report.summarize({**results, "best": {"fpr95": "x"}})


def _m(fpr95, auroc):
    return {"fpr95": fpr95, "auroc": auroc, "aupr_in": auroc, "aupr_out": auroc,
            "detection_accuracy": auroc}


def test_best_direction_lower_fpr_higher_rest():
    results = {"scores": {"a": {"x": _m(0.2, 0.7), "y": _m(0.4, 0.7)},
                          "b": {"x": _m(0.5, 0.9), "y": _m(0.5, 0.8)}}}
    s = report.summarize(results)
    md = report.render(results)
    assert "| **30.00** | 70.00 |" in md.split("## Summary")[1]  # the lower FPR95 in bold, its AUROC not
    assert "**85.00**" in md.split("## Summary")[1]  # the higher AUROC
    assert s["summary"]["a"]["fpr95"] == pytest.approx(0.3)
    assert s["positive"] == "id"


def test_positive_mismatch_and_bad_input_raise(run):
    results, _ = run
    with pytest.raises(ValueError, match="positive"):
        report.summarize({**results, "positive": "ood"})
    with pytest.raises(ValueError, match="empty"):
        report.summarize({"scores": {}})
    with pytest.raises(ValueError, match="fmt"):
        report.render(results, fmt="html")


# --------------------------------------------------------------------- render
def test_render_md(run):
    results, _ = run
    md = report.render(results)
    s = report.summarize(results)
    assert md.startswith("# Synthetic (ID) vs toy OOD suite")
    assert "positive = ID" in md and report.convention_line("id") in md
    assert "positive = OOD" not in md
    for name in SETS:
        assert f"### {name}" in md
    for key in KEYS:
        assert f"`{key}`" in md
    for m in METRIC_KEYS:  # best mean per column in bold
        vals = [s["summary"][k][m] for k in KEYS]
        best = min(vals) if m == "fpr95" else max(vals)
        assert f"**{100 * best:.2f}**" in md
    summary_part = md.split("## Summary")[1].split("## Per OOD set")[0]
    assert summary_part.count("**") == 2 * len(METRIC_KEYS)  # one bold cell per column
    assert "FPR95 ↓" in md and "AUROC ↑" in md
    assert "123,456" in md and "91.20" in md  # models table
    assert "seed 7" in md and "amp_tf 0.1.0" in md and "12.5 s" in md  # footer


def test_render_positive_ood_changes_convention():
    results, _ = make_run(positive="ood")
    md = report.render(results)
    assert "positive = OOD" in md and report.convention_line("ood") in md
    assert "positive = ID" not in md
    assert json.loads(report.render(results, "json"))["positive"] == "ood"


def test_render_csv_long_format(run):
    results, _ = run
    text = report.render(results, "csv", percent=False)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["score", "ood_set", "metric", "value"]
    data = rows[1:]
    assert len(data) == len(KEYS) * (len(SETS) + 1) * len(METRIC_KEYS)
    s = report.summarize(results)
    for key, name, metric, value in data:
        want = s["summary"][key][metric] if name == "mean" else results["scores"][key][name][metric]
        assert float(value) == pytest.approx(want, abs=1e-6)
    pct = list(csv.reader(io.StringIO(report.render(results, "csv"))))[1:]
    assert float(pct[0][3]) == pytest.approx(100 * float(data[0][3]), abs=1e-4)


def test_render_json_round_trip(run):
    results, _ = run
    d = json.loads(report.render(results, "json"))
    assert set(d["summary"]) == set(KEYS) and "best" not in d
    v = d["summary"]["anchored/amp"]["auroc"]
    assert v == round(v, 6)
    assert d["config"] == {"epochs": 2, "lr": 0.1, "sizes": [1, 2]}
    assert d["scores"]["vanilla/msp"]["digits"]["fpr95"] == pytest.approx(
        results["scores"]["vanilla/msp"]["digits"]["fpr95"], abs=1e-6)


# ------------------------------------------------------------------------ ROC
@pytest.mark.parametrize("tied", [False, True])
def test_roc_curve_area_equals_auroc(tied):
    rng = np.random.default_rng(3)
    if tied:
        id_s, ood_s = rng.integers(0, 6, 257).astype(float), rng.integers(-2, 4, 131).astype(float)
    else:
        id_s, ood_s = rng.normal(0.5, 1, 257), rng.normal(0, 1, 131)
    fpr, tpr = roc_curve(id_s, ood_s)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = np.trapezoid(tpr, fpr)
    assert abs(area - ood_metrics(id_s, ood_s)["auroc"]) < 1e-9


def test_roc_curve_tiny_exact():
    fpr, tpr = roc_curve([0.9, 0.8, 0.4], [0.5, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])


# ---------------------------------------------------------------- write files
def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5 * 1024, (path, len(data))


def test_write_report_all_files(run, tmp_path):
    results, score_values = run
    out = tmp_path / "nested" / "run"
    paths = report.write_report(out, results, score_values, formats=("json", "md", "csv"))
    expected = {"report.json", "report.md", "report.csv", "densities_anchored_amp.png",
                "densities_vanilla_msp.png", "auroc_vs_corruption.png"}
    expected |= {f"roc_{name}.png" for name in SETS}
    assert set(paths) == expected
    assert {p.name for p in out.iterdir()} == expected
    for fname, path in paths.items():
        assert path == str(out / fname)
        if fname.endswith(".png"):
            _assert_png(path)
    assert "summary" in json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith(report.render(results).split("## OOD groups")[0])
    links = md.split("## Plots")[1].split("##")[0]
    assert all(f"]({p.name})" in links for p in out.glob("*.png"))  # every plot written is linked


def test_write_report_without_scores_or_plots(run, tmp_path):
    results, _ = run
    paths = report.write_report(tmp_path, results)  # no score_values: only the level plot
    assert set(paths) == {"report.json", "report.md", "auroc_vs_corruption.png"}
    paths = report.write_report(tmp_path / "b", results, formats=("csv",), plots=False)
    assert set(paths) == {"report.csv"}


def test_plot_helpers_edge_cases(run, tmp_path):
    results, score_values = run
    no_blur = {"scores": {k: {"digits": v["digits"]} for k, v in results["scores"].items()}}
    assert plot_metric_vs_level(no_blur, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()
    p = plot_metric_vs_level(results, tmp_path / "fpr.png", metric="fpr95")
    _assert_png(p)
    assert plot_metric_vs_corruption(no_blur, tmp_path / "y.png") is None
    assert not (tmp_path / "y.png").exists()
    with pytest.raises(ValueError, match="metric"):
        plot_metric_vs_corruption(results, tmp_path / "z.png", metric="nope")
    with pytest.raises(ValueError, match="nope"):
        plot_roc(score_values, tmp_path / "r.png", "nope")


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_corruption_plot_one_panel_per_family(run, tmp_path):
    results, _ = run
    two = _png_size(plot_metric_vs_corruption(results, tmp_path / "two.png"))  # blur and jpeg
    only_blur = {"scores": {k: {n: m for n, m in v.items() if "blur" in n} for k, v in results["scores"].items()}}
    one = _png_size(plot_metric_vs_corruption(only_blur, tmp_path / "one.png"))
    four_sets = {k: dict(v, **{f"fmnist_{fam}_2": v["fmnist_blur_2"] for fam in ("contrast", "pixelate")})
                 for k, v in results["scores"].items()}
    four = _png_size(plot_metric_vs_corruption({"scores": four_sets}, tmp_path / "four.png"))
    assert two[0] > one[0] * 1.4 and two[1] == one[1]  # a second column of panels
    assert four[0] == two[0] and four[1] > two[1] * 1.6  # and a second row


def test_line_styles_one_colour_per_score_one_style_per_model():
    keys = ["vanilla/msp", "vanilla/energy", "anchored/amp", "anchored/msp", "anchored/energy",
            "anchored/amp[sum,exp]"]
    st = plots._line_styles(keys)
    assert st["vanilla/msp"]["color"] == st["anchored/msp"]["color"]
    assert st["vanilla/energy"]["color"] == st["anchored/energy"]["color"]
    scores = {k.split("/")[1]: st[k]["color"] for k in keys}
    assert len(set(scores.values())) == len(scores) == 4  # msp, energy, amp, amp[sum,exp]
    assert {st[k]["ls"] for k in keys if k.startswith("vanilla")} == {"-"}
    assert {st[k]["ls"] for k in keys if k.startswith("anchored")} == {"--"}
    many = plots._line_styles([f"m/s{i}" for i in range(14)])
    assert len({v["color"] for v in many.values()}) == 14


def test_roc_every_curve_its_own_colour_legend_outside(monkeypatch, tmp_path):
    """16 curves: 16 colours, one line style per model, the same key alike in every plot, legend right of the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    anchored = ["amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]", "neg_tau", "amp+knn", "amp+mahalanobis"]
    vanilla = ["msp", "energy", "odin", "maxlogit", "entropy", "react", "knn", "mahalanobis", "gram"]
    rng = np.random.default_rng(0)
    keys = [f"anchored/{s}" for s in anchored] + [f"vanilla/{s}" for s in vanilla]
    score_values = {k: {"id": rng.normal(0, 1, 200), "digits": rng.normal(-0.1 * i, 1, 100),
                        "letters": rng.normal(-1, 1, 100)} for i, k in enumerate(keys)}
    score_values["vanilla/gram"].pop("letters")  # a key without this set is skipped
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or str(path))
    plot_roc(score_values, tmp_path / "a.png", "digits")
    plot_roc(score_values, tmp_path / "b.png", "letters")
    looks = []
    for fig, n in zip(figs, (16, 15)):
        (ax,) = fig.axes
        curves = [ln for ln in ax.get_lines() if ln.get_color() != "grey"]  # the chance line is grey
        assert len(curves) == n
        looks.append({ln.get_color(): ln.get_linestyle() for ln in curves})
        assert len(looks[-1]) == n  # no colour twice
        (legend,) = fig.legends
        assert len(legend.get_texts()) == n + 1  # and the chance line
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # outside the data
        assert legend.get_window_extent(renderer).x1 <= fig.bbox.x1 + 1  # and inside the figure
    assert set(looks[1].items()) <= set(looks[0].items())  # a key keeps its colour and style
    st = plots._roc_styles(keys)
    assert {st[k]["ls"] for k in keys[:7]} == {"-"} and {st[k]["ls"] for k in keys[7:]} == {"--"}
    many = plots._roc_styles([f"m{i % 3}/s{i}" for i in range(20)])
    assert len({v["color"] for v in many.values()}) == 20
