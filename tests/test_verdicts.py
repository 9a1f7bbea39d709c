"""benchmarks.verdicts: each rule on synthetic group tables (both outcomes), and the CLI."""
import json

import pytest

from benchmarks import verdicts


def _res(fprs, selected="amp[mean,divide]"):
    """`fprs`: {row: {group: FPR95 %}} -> a results dict as ood_report writes it."""
    return {"groups": {r: {g: {"fpr95": {"mean": v / 100}} for g, v in gs.items()} for r, gs in fprs.items()},
            "selection": {"variant": {"selected": selected}}}


def _base(amp):
    rows = {f"vanilla/{n}": {"near": 80, "far": 60, "covariate": 90, "overall": 76} for n in verdicts.LOGIT}
    rows.update({f"vanilla/{n}": {"overall": 40} for n in verdicts.FEATURE})
    rows["anchored/amp"] = amp
    rows["anchored/amp[mean,divide]"] = {"overall": 70}
    return rows


def test_rules_hold_and_fail():
    good = dict(zip((t for t, _ in verdicts.VERDICTS), (
        ok for _, ok, _ in verdicts.check(_res(_base({"near": 85, "far": 50, "covariate": 91, "overall": 75})))))
    )
    assert list(good.values())[:4] == [True, True, True, True]
    assert list(good.values())[4] is False  # amp[mean,divide] 70 < amp 75: the selected variant is better
    assert list(good.values())[5] is True and list(good.values())[6] is None
    bad = [ok for _, ok, _ in verdicts.check(_res(_base({"near": 70, "far": 65, "covariate": 80, "overall": 90})))]
    assert bad[:6] == [False, False, False, False, False, True]
    worse = [ok for _, ok, _ in verdicts.check(_res(_base({"overall": 30})))]
    assert worse[1:4] == [None, None, None] and worse[4] is True and worse[5] is False


def test_anchored_feature_rule_and_selected_amp():
    rows = _base({"near": 85, "far": 50, "covariate": 91, "overall": 75})
    rows["anchored/amp+mahalanobis"] = {"overall": 35}
    got = verdicts.check(_res(rows, selected="amp"))
    assert got[6][1] is True and "amp+mahalanobis 35.0" in got[6][2]
    assert got[4][1] is False and "selects amp itself" in got[4][2]


def test_cli_table_and_missing_file(tmp_path, capsys):
    f = tmp_path / "run.json"
    f.write_text(json.dumps(_res(_base({"near": 85, "far": 50, "covariate": 91, "overall": 75}))))
    assert verdicts.main([str(f)]) == 0
    out = capsys.readouterr().out
    assert "| verdict | run |" in out and "holds (amp 75.0 vs msp 76.0)" in out and "not measured" in out
    assert "| anchored/amp | 85.0 | 50.0 | 91.0 | 75.0 |" in out and "| vanilla/gram | – | – | – | 40.0 |" in out
    with pytest.raises(SystemExit):
        verdicts.main([str(tmp_path / "nope.json")])
