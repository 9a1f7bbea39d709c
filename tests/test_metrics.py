import csv
import io

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from amp_tf.detection import metrics
from amp_tf.detection.metrics import format_table, metrics_table, ood_metrics


# ----------------------------------------------------------------- references
def brute_fpr(pos, neg, level=0.95):
    """Largest threshold t (over all sample values) with mean(pos >= t) >= level."""
    cands = np.unique(np.concatenate([pos, neg]))
    ok = [t for t in cands if np.mean(pos >= t) >= level]
    t = max(ok)
    return np.mean(neg >= t)


def brute_detacc(id_s, ood_s):
    cands = list(np.unique(np.concatenate([id_s, ood_s]))) + [np.inf, -np.inf]
    best = 1.0
    for t in cands:
        best = min(best, 0.5 * (np.mean(id_s < t) + np.mean(ood_s >= t)))
    return 1.0 - best


def brute_auroc(id_s, ood_s):
    d = id_s[:, None] - ood_s[None, :]
    return np.mean(d > 0) + 0.5 * np.mean(d == 0)


def sk_refs(id_s, ood_s):
    y = np.r_[np.ones(id_s.size), np.zeros(ood_s.size)]
    s = np.r_[id_s, ood_s]
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_in": average_precision_score(y, s),
        "aupr_out": average_precision_score(1 - y, -s),
    }


def datasets(rng):
    cont = (rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.2, 217))
    tied = (rng.integers(0, 6, 250).astype(float), rng.integers(0, 6, 180).astype(float) - 1)
    tied_heavy = (rng.integers(0, 3, 41).astype(float), rng.integers(0, 3, 59).astype(float))
    big = (cont[0] * 1e6, cont[1] * 1e6)
    neg = (cont[0] - 1e3, cont[1] - 1e3)
    small_n = (rng.normal(0.5, 1, 7), rng.normal(0, 1, 3))
    return {
        "continuous": cont,
        "tied": tied,
        "tied_heavy": tied_heavy,
        "scaled_1e6": big,
        "negative_offset": neg,
        "small_n": small_n,
    }


@pytest.fixture
def all_sets(rng):
    return datasets(rng)


NAMES = ["continuous", "tied", "tied_heavy", "scaled_1e6", "negative_offset", "small_n"]


# ----------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", NAMES)
def test_matches_sklearn_and_brute_force(all_sets, name):
    id_s, ood_s = all_sets[name]
    m = ood_metrics(id_s, ood_s)
    ref = sk_refs(id_s, ood_s)
    for k in ("auroc", "aupr_in", "aupr_out"):
        assert abs(m[k] - ref[k]) < 1e-6, (k, m[k], ref[k])
    assert abs(m["auroc"] - brute_auroc(id_s, ood_s)) < 1e-12
    assert m["fpr95"] == pytest.approx(brute_fpr(id_s, ood_s), abs=1e-12)
    assert m["detection_accuracy"] == pytest.approx(brute_detacc(id_s, ood_s), abs=1e-12)
    assert m["positive"] == "id"
    for k in metrics.METRIC_KEYS:
        assert 0.0 <= m[k] <= 1.0 and isinstance(m[k], float)


@pytest.mark.parametrize("name", NAMES)
def test_positive_ood_openood_convention(all_sets, name):
    id_s, ood_s = all_sets[name]
    m_id = ood_metrics(id_s, ood_s, positive="id")
    m = ood_metrics(id_s, ood_s, positive="ood")
    assert m["positive"] == "ood"
    # FPR95: fraction of ID flagged OOD (-s >= t) at the largest t detecting >= 95% OOD
    assert m["fpr95"] == pytest.approx(brute_fpr(-ood_s, -id_s), abs=1e-12)
    # OpenOOD v1.5 computes it from sklearn's ROC curve (OOD positive, -score)
    y = np.r_[np.zeros(id_s.size), np.ones(ood_s.size)]
    fpr, tpr, _ = roc_curve(y, -np.r_[id_s, ood_s], drop_intermediate=False)
    assert m["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    # the other metrics keep their meaning / value
    for k in ("auroc", "aupr_in", "aupr_out", "detection_accuracy"):
        assert m[k] == pytest.approx(m_id[k], abs=1e-12), k


def test_fpr95_id_convention_matches_roc_curve(all_sets):
    id_s, ood_s = all_sets["tied"]
    y = np.r_[np.ones(id_s.size), np.zeros(ood_s.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[id_s, ood_s], drop_intermediate=False)
    assert ood_metrics(id_s, ood_s)["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_fpr95_hand_example():
    # 20 ID scores 1..20: 95% -> 19 of them must be >= t -> t = 2
    id_s = np.arange(1, 21, dtype=float)
    ood_s = np.array([0.0, 1.0, 2.0, 2.0, 3.0, 100.0, -5.0, 1.5])
    # OOD >= 2: 2, 2, 3, 100 -> 4 / 8
    assert ood_metrics(id_s, ood_s)["fpr95"] == 0.5
    assert metrics.fpr_at_tpr(id_s, ood_s) == 0.5
    # TPR 80%: 16 of 20 >= t -> t = 5 -> OOD >= 5: 100 -> 1 / 8
    assert metrics.fpr_at_tpr(id_s, ood_s, tpr=0.8) == 0.125


def test_hand_example_all_metrics():
    id_s = np.array([3.0, 2.0, 2.0])
    ood_s = np.array([2.0, 1.0])
    m = ood_metrics(id_s, ood_s)
    # pairs: (3>2,3>1,2=2,2>1,2=2,2>1) -> (4 + 0.5*2)/6
    assert m["auroc"] == pytest.approx(5 / 6)
    # thresholds 3: tp1 fp0 P=1 ; 2: tp3 fp1 P=3/4 ; 1: recall unchanged
    assert m["aupr_in"] == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 4)
    # -score: OOD positive; thresholds -1: tp1 fp0 ; -2: tp2 fp2 P=1/2
    assert m["aupr_out"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    # best threshold t=3: err 0.5*(2/3+0)=1/3 ; t=2: 0.5*(0+1/2)=1/4 -> acc 3/4
    assert m["detection_accuracy"] == pytest.approx(0.75)
    # 95% of 3 -> need all 3 -> t = 2 -> OOD >= 2: 1/2
    assert m["fpr95"] == pytest.approx(0.5)


def test_perfect_separation(rng):
    id_s = rng.uniform(10, 20, 100)
    ood_s = rng.uniform(-5, 9, 80)
    for positive in ("id", "ood"):
        m = ood_metrics(id_s, ood_s, positive=positive)
        assert m["fpr95"] == 0.0
        assert m["auroc"] == 1.0
        assert m["aupr_in"] == 1.0 and m["aupr_out"] == 1.0
        assert m["detection_accuracy"] == 1.0
    # fully reversed: worst case
    m = ood_metrics(ood_s, id_s)
    assert m["auroc"] == 0.0 and m["fpr95"] == 1.0 and m["detection_accuracy"] == 0.5


def test_identical_distributions(rng):
    id_s = rng.normal(size=4000)
    ood_s = rng.normal(size=4000)
    m = ood_metrics(id_s, ood_s)
    assert abs(m["auroc"] - 0.5) < 0.02
    assert abs(m["fpr95"] - 0.95) < 0.02
    # all-equal scores: exactly chance
    m = ood_metrics(np.ones(10), np.ones(7))
    assert m["auroc"] == 0.5 and m["fpr95"] == 1.0 and m["detection_accuracy"] == 0.5
    assert m["aupr_in"] == pytest.approx(10 / 17) and m["aupr_out"] == pytest.approx(7 / 17)


def test_permutation_invariant_and_deterministic(all_sets, rng):
    for name in ("continuous", "tied"):
        id_s, ood_s = all_sets[name]
        for positive in ("id", "ood"):
            a = ood_metrics(id_s, ood_s, positive=positive)
            b = ood_metrics(rng.permutation(id_s), rng.permutation(ood_s), positive=positive)
            assert a == b  # bit-identical


def test_input_types_and_dtypes(all_sets):
    id_s, ood_s = all_sets["continuous"]
    a = ood_metrics(id_s, ood_s)
    b = ood_metrics(list(id_s.astype(np.float32)), ood_s.astype(np.float32))
    ref = sk_refs(id_s.astype(np.float32), ood_s.astype(np.float32))
    assert b["auroc"] == pytest.approx(ref["auroc"], abs=1e-9)
    assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-3)
    ints = ood_metrics(np.array([3, 2, 2]), np.array([2, 1]))
    assert ints["auroc"] == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    "id_s,ood_s,match",
    [
        ([], [1.0], "id_scores is empty"),
        ([1.0], np.array([]), "ood_scores is empty"),
        ([1.0, np.nan], [1.0], "id_scores contains 1 non-finite"),
        ([1.0], [np.inf, 2.0, -np.inf], "ood_scores contains 2 non-finite"),
        (np.ones((3, 2)), [1.0], "id_scores must be 1-D"),
        ([1.0], np.ones((3, 1)), "ood_scores must be 1-D.*np.ravel"),
        (["a", "b"], [1.0], "id_scores must be numeric"),
    ],
)
def test_bad_inputs(id_s, ood_s, match):
    with pytest.raises(ValueError, match=match):
        ood_metrics(id_s, ood_s)


def test_bad_positive():
    with pytest.raises(ValueError, match="positive must be 'id' or 'ood'"):
        ood_metrics([1.0], [0.0], positive="ID ")
    with pytest.raises(ValueError, match="positive"):
        metrics.average_precision([1.0], [0.0], positive="x")


def test_component_functions(all_sets):
    id_s, ood_s = all_sets["tied"]
    m = ood_metrics(id_s, ood_s)
    assert metrics.auroc(id_s, ood_s) == m["auroc"]
    assert metrics.average_precision(id_s, ood_s) == m["aupr_in"]
    assert metrics.average_precision(id_s, ood_s, positive="ood") == m["aupr_out"]
    assert metrics.detection_accuracy(id_s, ood_s) == m["detection_accuracy"]
    assert metrics.fpr_at_tpr(id_s, ood_s, positive="ood") == ood_metrics(id_s, ood_s, "ood")["fpr95"]


# ----------------------------------------------------------------- tables
def _results():
    r1 = {"fpr95": 0.1, "auroc": 0.9, "aupr_in": 0.8, "aupr_out": 0.7, "detection_accuracy": 0.85, "positive": "id"}
    r2 = {"fpr95": 0.3, "auroc": 0.7, "aupr_in": 0.6, "aupr_out": 0.5, "detection_accuracy": 0.65, "positive": "id"}
    return {"svhn": r1, "textures": r2}


def test_metrics_table_mean_row():
    t = metrics_table(_results())
    assert [n for n, _ in t.rows] == ["svhn", "textures", "mean"]
    assert t.mean == pytest.approx(
        {"fpr95": 0.2, "auroc": 0.8, "aupr_in": 0.7, "aupr_out": 0.6, "detection_accuracy": 0.75}
    )
    assert "positive" not in t["svhn"]
    # from real metrics
    rng = np.random.default_rng(1)
    res = {f"set{i}": ood_metrics(rng.normal(1, 1, 50), rng.normal(0, 1, 40)) for i in range(3)}
    t = metrics_table(res)
    for k in metrics.METRIC_KEYS:
        assert t.mean[k] == pytest.approx(np.mean([res[s][k] for s in res]))


def test_metrics_table_errors():
    with pytest.raises(ValueError, match="empty"):
        metrics_table({})
    with pytest.raises(ValueError, match="lacks metric"):
        metrics_table({"a": {"auroc": 0.5}})
    with pytest.raises(ValueError, match="reserved"):
        metrics_table({"mean": _results()["svhn"]})


def test_format_table_md_and_csv():
    t = metrics_table(_results())
    md = format_table(t, fmt="md")
    lines = md.strip().splitlines()
    assert lines[0] == "| OOD set | FPR95 | AUROC | AUPR-in | AUPR-out | DetAcc |"
    assert len(lines) == 2 + 3
    assert "| svhn | 10.00 | 90.00 | 80.00 | 70.00 | 85.00 |" in lines
    assert "| mean | 20.00 | 80.00 | 70.00 | 60.00 | 75.00 |" in lines
    assert "textures" in md and str(t) == md

    text = format_table(_results(), fmt="csv", percent=False)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["OOD set", "FPR95", "AUROC", "AUPR-in", "AUPR-out", "DetAcc"]
    assert [r[0] for r in rows[1:]] == ["svhn", "textures", "mean"]
    assert float(rows[3][1]) == pytest.approx(0.2) and float(rows[1][5]) == pytest.approx(0.85)
    with pytest.raises(ValueError, match="fmt"):
        format_table(t, fmt="html")
