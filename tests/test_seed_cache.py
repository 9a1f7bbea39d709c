"""benchmarks.harness.seed_cache: the converged benchmark's per-seed cache (no TensorFlow, fast)."""
import json
import os

import pytest

from benchmarks.harness.seed_cache import CacheError, SeedCache, setting_differences

SETTINGS = {"width": 24, "epochs": 15, "finetune_lr": 0.1, "eval_limit": 1000, "mean": (72.9,)}


def cache(folder, settings=SETTINGS, version="v1", lines=None):
    return SeedCache(folder, settings, code_version=version, log=(lines.append if lines is not None else print))


def test_round_trip_and_fresh_machine(tmp_path):
    c = cache(tmp_path / "converged")
    assert c.check(resume=False) == [] and c.load(0) is None
    c.save(0, {"acc": 0.935, "rows": {"vanilla/msp": {"digits": {"fpr95": 0.4}}}})
    # a later session on a fresh machine: a new object over the same (git-committed) folder
    again = cache(tmp_path / "converged")
    assert again.check(resume=True) == [0]
    assert again.load(0)["acc"] == 0.935 and again.load(1) is None
    stored = json.loads((tmp_path / "converged" / "seed0.json").read_text())
    assert stored["code_version"] == "v1" and stored["complete"] is True and stored["seed"] == 0
    assert stored["settings"]["mean"] == [72.9]  # tuples stored as lists compare equal on resume


def test_existing_files_need_resume(tmp_path):
    cache(tmp_path).save(3, {"x": 1})
    with pytest.raises(CacheError, match=r"seeds \[3\]: pass --resume"):
        cache(tmp_path).check(resume=False)


def test_resume_with_other_settings_is_refused_naming_each(tmp_path):
    cache(tmp_path).save(0, {"x": 1})
    other = dict(SETTINGS, width=16, epochs=10)
    other.pop("eval_limit")
    with pytest.raises(CacheError) as err:
        cache(tmp_path, other).check(resume=True)
    msg = str(err.value)
    assert "width: stored 24, now 16" in msg and "epochs: stored 15, now 10" in msg
    assert "eval_limit: stored 1000, now '<not set>'" in msg and "finetune_lr" not in msg


def test_other_code_version_is_redone_with_a_line(tmp_path):
    cache(tmp_path, version="v1").save(0, {"x": 1})
    lines = []
    c = cache(tmp_path, version="v2", lines=lines)
    assert c.check(resume=True) == []  # settings equal: no refusal, but nothing reused
    assert c.load(0) is None
    assert len(lines) == 1 and "'v1'" in lines[0] and "'v2'" in lines[0] and "redone" in lines[0]
    c.save(0, {"x": 2})
    assert cache(tmp_path, version="v2").load(0) == {"x": 2}


def test_incomplete_or_corrupt_files_are_redone(tmp_path):
    tmp_path.joinpath("seed1.json").write_text('{"code_version": "v1", "settings": {}, "result": {}}')
    tmp_path.joinpath("seed2.json").write_text('{"code_version": "v1", "sett')  # cut off
    lines = []
    c = cache(tmp_path, lines=lines)
    assert c.check(resume=True) == []
    assert c.load(1) is None and c.load(2) is None
    assert any("not a complete seed" in m for m in lines) and any("unreadable" in m for m in lines)


def test_interrupted_write_leaves_no_seed(tmp_path, monkeypatch):
    c = cache(tmp_path)
    c.save(0, {"x": 1})

    def killed(*a, **k):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        c.save(0, {"x": 2})
        c.save(1, {"x": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.json"]  # no temp file left behind
    assert cache(tmp_path).load(0) == {"x": 1} and cache(tmp_path).load(1) is None


def test_setting_differences_is_symmetric_in_keys():
    assert setting_differences({"a": 1}, {"a": 1}) == []
    assert setting_differences({"a": (1, 2)}, {"a": [1, 2]}) == []
    assert setting_differences({}, {"b": 2}) == ["b: stored '<not set>', now 2"]


def test_doctest():
    import doctest

    from benchmarks.harness import seed_cache

    r = doctest.testmod(seed_cache)
    assert r.attempted >= 4 and r.failed == 0
