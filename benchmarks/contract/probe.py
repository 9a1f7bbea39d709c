"""An independent probe of amp-tf's input contract (issue 30): several hundred careless or unusual
inputs at every door (the library, every CLI, the examples, LiteRT, the detectors, the data loaders,
run folders, flag ranges and combinations), each answer classified clear / late / obscure / wrong.

    .venv/bin/python -m benchmarks.contract.probe --out benchmarks/results/probe.json

writes probe.json and probe.md (a table: case, door, input, outcome, seconds, first line of the
answer). Everything runs in a temporary workspace (removed at the end unless --keep); nothing
downloads. Flag-only cases run first, one at a time, so that their timings are those of a quiet
process; then two jobs at a time: commands, parent-side cases and worker processes that run the
library cases of a group after one TensorFlow import (`benchmarks.contract.worker`).

Options: ``--only REGEX`` (case ids), ``--list``, ``--jobs N``, ``--keep``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.contract import classify, fixtures, runner, spec

CASE_MODULES = ("cases_train", "cases_train2", "cases_eval", "cases_tools", "cases_custom", "cases_lib_core",
                "cases_lib_model", "cases_lib_serve", "cases_lib_det", "cases_lib_data")
_LOCK = threading.Lock()
_DONE = []


def all_cases():
    for m in CASE_MODULES:
        importlib.import_module(f"benchmarks.contract.{m}")
    return list(spec.CASES)


def make_ctx(ws):
    """The placeholders every case may use, and the fixture files they name."""
    ctx = {"ws": str(ws), "repo": str(runner.REPO), "py": runner.PY, "m": str(ws / "models"),
           "run": str(ws / "tinyrun" / "run"), "fm": str(fixtures.FMNIST)}
    (ws / "models").mkdir(parents=True, exist_ok=True)
    for prefix, made in (("img", fixtures.images(ws / "img")), ("npy", fixtures.arrays(ws / "npy")),
                         ("dd", fixtures.data_dirs(ws / "dd"))):
        ctx.update({f"{prefix}_{k}": str(v) for k, v in made.items()})
    return ctx


def _record(case, r, ctx, total):
    outcome, why = classify.classify(case, r, ctx)
    r.update(id=case.id, door=case.door, input=case.input, new=case.new, row=case.row, kind=case.kind,
             expect=case.expect, outcome=outcome, why=why)
    if case.note and not why:
        r["why"] = case.note
    with _LOCK:
        _DONE.append(r)
        print(f"[probe] {len(_DONE):3d}/{total} {outcome:8s} {r.get('seconds', 0):6.1f}s  {case.id}  "
              f"({case.door}): {str(r.get('answer', ''))[:150]}", flush=True)
    return r


def run_one(case, ctx, ws, total):
    """A cli or custom case: its own folder, its setup, the command or the function, the class."""
    d = ws / "cases" / case.id
    d.mkdir(parents=True, exist_ok=True)
    fmt = {**ctx, "d": str(d)}
    t0 = time.time()
    try:
        if case.setup is not None:
            fmt.update(case.setup(fmt, d) or {})
        if case.kind == "cli":
            argv = [a.format(**fmt) for a in case.argv]
            r = runner.run(argv, d, case.timeout)
        else:
            r = case.fn(fmt, d)
    except Exception as err:  # noqa: BLE001  (a probe bug must not stop the probe: it is reported)
        r = {"exit": None, "seconds": round(time.time() - t0, 2), "answer": f"PROBE ERROR {type(err).__name__}: {err}",
             "probe_error": True}
        print(f"[probe] probe error in {case.id}: {err!r}", flush=True)
    return _record(case, r, fmt, total)


def run_group(group, cases, ctx, ws, total):
    """The lib cases of one group in a worker process, restarted after a crash or a hung case."""
    ctx_file = ws / "ctx.json"
    out = ws / f"lib-{group}.jsonl"
    cwd = ws / "cases" / f"lib-{group}"
    cwd.mkdir(parents=True, exist_ok=True)
    by_id = {c.id: c for c in cases}
    done = set()
    for _attempt in range(len(cases) + 1):
        remaining = [c for c in cases if c.id not in done]
        if not remaining:
            break
        err_file = cwd / f"stderr{_attempt}.txt"
        with open(err_file, "w") as err:
            p = subprocess.Popen([runner.PY, "-m", "benchmarks.contract.worker", group, str(ctx_file), str(out),
                                  *[c.id for c in remaining]], cwd=cwd, env=runner.env(), stdout=err, stderr=err)
        seen, current, started, killed = 0, None, time.time(), False
        while True:
            lines = out.read_text().splitlines() if out.exists() else []
            for line in lines[seen:]:
                rec = json.loads(line)
                if "start" in rec:
                    current, started = rec["start"], time.time()
                elif rec["id"] not in done:
                    done.add(rec["id"])
                    current = None
                    _record(by_id[rec["id"]], rec, ctx, total)
            seen = len(lines)
            if p.poll() is not None:
                break
            if current and time.time() - started > by_id[current].timeout:
                p.kill()
                p.wait()
                done.add(current)
                _record(by_id[current], {"timeout": True, "seconds": round(time.time() - started, 1),
                                         "answer": "no answer (killed)", "raised": True}, ctx, total)
                current, killed = None, True
                break
            time.sleep(0.3)
        if killed:
            continue
        if current and current not in done:  # the process died inside a case
            tail = err_file.read_text(errors="replace").splitlines()[-6:]
            done.add(current)
            _record(by_id[current], {"crashed": True, "raised": True, "seconds": round(time.time() - started, 1),
                                     "answer": f"worker exit {p.returncode}: " + " / ".join(tail)[-400:]}, ctx, total)
        elif p.returncode not in (0, None) and not current:
            tail = err_file.read_text(errors="replace")[-800:]
            print(f"[probe] worker {group} exited {p.returncode} between cases: {tail}", flush=True)
            break


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/probe.json")
    ap.add_argument("--only", default=None, help="a regular expression of case ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = ap.parse_args(argv)
    cases = all_cases()
    if args.only:
        keep = {c.id for c in cases if re.search(args.only, c.id)}
        keep |= {"fmnist-tiny-run"} | {c.id for c in cases if c.group == "fixtures"}
        cases = [c for c in cases if c.id in keep]
    if args.list:
        for c in cases:
            print(f"{c.id:40s} {c.kind:6s} {'new' if c.new else c.row!s:4s} {c.door}: {c.input}")
        return 0
    started = time.time()
    ws = Path(tempfile.mkdtemp(prefix="amp-probe-"))
    print(f"[probe] {len(cases)} cases ({sum(c.new for c in cases)} new); workspace {ws}", flush=True)
    ctx = make_ctx(ws)
    (ws / "ctx.json").write_text(json.dumps(ctx))
    total = len(cases)
    try:
        quick = [c for c in cases if c.kind == "cli" and c.early and not c.needs]
        for c in quick:  # one at a time: their timings are a quiet process's
            run_one(c, ctx, ws, total)
        tiny = [c for c in cases if c.id == "fmnist-tiny-run"]
        fix = [c for c in cases if c.group == "fixtures"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [pool.submit(run_one, c, ctx, ws, total) for c in tiny]
            jobs += [pool.submit(run_group, "fixtures", fix, ctx, ws, total)] if fix else []
            [j.result() for j in jobs]
        rest = [c for c in cases if c not in quick and c not in tiny and c not in fix]
        groups = {}
        for c in rest:
            if c.kind == "lib":
                groups.setdefault(c.group, []).append(c)
        singles = sorted([c for c in rest if c.kind != "lib"], key=lambda c: (not c.heavy, c.kind != "custom"))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            jobs = [pool.submit(run_group, g, cs, ctx, ws, total) for g, cs in groups.items()]
            jobs += [pool.submit(run_one, c, ctx, ws, total) for c in singles]
            for j in jobs:
                j.result()
    finally:
        order = {c.id: i for i, c in enumerate(cases)}
        fixture_ids = {c.id for c in cases if c.group == "fixtures"}  # set-up, not a probe case
        results = sorted((r for r in _DONE if r["id"] not in fixture_ids), key=lambda r: order.get(r["id"], 1e9))
        s = classify.write(results, args.out, started, {"workspace": str(ws) if args.keep else None})
        for line in Path("/proc/mounts").read_text().splitlines():  # a tmpfs left by an interrupted case
            if str(ws) in line.split()[1]:
                subprocess.run(["umount", "-l", line.split()[1]], capture_output=True)
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    print(f"[probe] done in {time.time() - started:.0f} s: {json.dumps(s)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
