#!/usr/bin/env python
"""Regression benchmark: this revision vs an earlier one, side by side on this machine.

Run from the repository root (either form):

    python -m benchmarks.speed --against 6c7eddd
    python -m benchmarks.speed.against --against 6c7eddd --quick

Both revisions are checked out in temporary `git worktree`s (`--head HEAD` by
default: the committed code, untouched by edits in progress; `--head .` times
this checkout as it is). Each runs in a child process of its own
(`benchmarks/speed/against_worker.py` with `PYTHONPATH` on its tree, so each
imports its own amp_tf) that builds every measure once and then waits; the
parent asks them for one timed sample each, in alternating order (HEAD, REV;
REV, HEAD; ...), for `--rounds` rounds, so drifts of a shared machine hit both
alike. Medians are reported, with the ratio per measure (HEAD speed / REV
speed, > 1 = HEAD faster) as the median of the per-round ratios (the headline,
and what the targets read), beside the ratio of the medians, of the fastest
samples and of process CPU time:

* `train`: anchored training images/s (`AnchoredModel.fit` on arrays, one epoch of
  `--n-train` images, batch B, T on every 5th step);
* `train_step`: the same model's compiled train step alone (5 steps on a fixed
  batch, T once): the compute without fit's per-epoch and per-step overhead;
* `vanilla`: the plain 1-channel backbone's compiled inference forward, images/s;
* `amp`: AMP inference at K anchors, `AnchoredPredictor.predict` on a batch of B, images/s;
* `amp_call`: the predictor's compiled call alone (no numpy-side checks), images/s;
* `savedmodel` / `tflite`: the exported serving model's latency per image (one
  uint8 image per call), where both revisions can export it.

The network is the peer benchmark's: `resnet_small` width 16, 28x28x1, batch 128, K = 5
(`amp_tf.recipe.NUM_ANCHORS`).
It prints the CPU model and its vector extensions (AVX2 / AVX-512 / AMX), and
writes `benchmarks/results/speed_against_<rev>.json` and `.md`.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/against.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed.against")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness import ROOT  # noqa: E402
from benchmarks.harness.machine import Contention, cpu_model, load_average, proc_stat, vector_extensions  # noqa: E402
from benchmarks.harness.results import check_k, write_json  # noqa: E402

WORKER = Path(__file__).resolve().with_name("against_worker.py")
RESULTS = ROOT / "benchmarks" / "results"
#: measure -> (label, kind): "rate" = images/s (higher is faster), "latency" = ms per image.
MEASURES = {
    "train": ("anchored training (fit on arrays, T every 5th step)", "rate"),
    "train_step": ("anchored training step (compiled, fixed batch)", "rate"),
    "vanilla": ("vanilla inference (plain backbone)", "rate"),
    "amp": ("AMP inference (AnchoredPredictor.predict)", "rate"),
    "amp_call": ("AMP inference (compiled call only)", "rate"),
    "savedmodel": ("exported SavedModel, 1 image per call", "latency"),
    "tflite": ("exported .tflite, 1 image per call", "latency"),
}
TARGETS = {"vanilla": 1.0, "amp": 1.0, "amp_call": 1.0}  # HEAD must be at least as fast as the release point
#: A ratio this close below its target is reported as "within noise", not as a regression: side-by-side
#: medians of identical code differ by about this much on a shared 2-core machine.
NOISE = 0.02


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.against",
        description="Times this revision and REV side by side (temporary git worktrees, one child "
        "process per revision, alternating rounds, medians) and prints the ratio per measure.")
    p.add_argument("--against", required=True, metavar="REV", help="the earlier revision (any git rev)")
    p.add_argument("--head", default="HEAD", metavar="REV",
                   help="the newer side: a git rev checked out in a worktree (default HEAD, the "
                        "committed code), or '.' for this checkout as it is, uncommitted edits included")
    p.add_argument("--quick", action="store_true", help="3 rounds, shorter samples (~3 min on 2 cores)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 8; 3 with --quick)")
    p.add_argument("--measures", default=",".join(MEASURES),
                   help="comma list of %s (default: all)" % ", ".join(MEASURES))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16, help="resnet_small width (default 16)")
    p.add_argument("--k", type=int, default=NUM_ANCHORS,
                   help=f"anchors of AMP inference (default {NUM_ANCHORS}, amp_tf.recipe.NUM_ANCHORS)")
    p.add_argument("--n-train", type=int, default=None,
                   help="images per timed training epoch (default 3200; 1280 with --quick)")
    p.add_argument("--min-sample-s", type=float, default=None,
                   help="an inference sample repeats calls for at least this long (default 0.5 s; 0.3 quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="STEM",
                   help="results path without suffix (default benchmarks/results/speed_against_<rev>)")
    p.add_argument("--no-write", action="store_true", help="print only, write no result files")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (3 if a.quick else 8)
    a.n_train = a.n_train or (1280 if a.quick else 3200)
    a.min_sample_s = a.min_sample_s or (0.3 if a.quick else 0.5)
    a.measures = [m for m in a.measures.replace(" ", "").split(",") if m]
    if not a.measures or set(a.measures) - set(MEASURES):
        p.error("--measures: a comma list of " + ", ".join(MEASURES))
    a.k = check_k(p, a.k, "--k")
    if a.rounds < 1 or a.batch_size < 1 or a.n_train < a.batch_size:
        p.error("--rounds >= 1, --batch-size >= 1, --n-train >= --batch-size")
    return a


# ------------------------------------------------------------------ revisions
def git(*cmd):
    return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def describe(rev):
    """`(full sha, short sha, subject)` of a revision; ValueError when git does not know it."""
    try:
        sha = git("rev-parse", "--verify", rev + "^{commit}")
    except subprocess.CalledProcessError as err:
        raise ValueError(f"--against/--head: git does not know the revision {rev!r}") from err
    return sha, sha[:7], git("log", "-1", "--format=%s", sha)[:100]


class Tree:
    """A revision's source tree: a temporary worktree (removed by `close`), or this checkout ('.')."""

    def __init__(self, rev, parent):
        if rev == ".":
            dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "amp_tf"))
            self.sha, short, self.subject = describe("HEAD")
            self.label = f"checkout@{short}" + ("+edits" if dirty else "")
            self.path, self.worktree = ROOT, False
            return
        self.sha, self.label, self.subject = describe(rev)
        self.path, self.worktree = Path(parent) / self.label, True
        git("worktree", "add", "--detach", str(self.path), self.sha)

    def close(self):
        if self.worktree and self.path.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(self.path)], cwd=ROOT,
                           capture_output=True)


class Worker:
    """One child process timing one tree (see `benchmarks/speed/against_worker.py`)."""

    def __init__(self, tree, cfg, log_dir):
        self.tree = tree
        env = dict(os.environ, PYTHONPATH=str(tree.path), TF_CPP_MIN_LOG_LEVEL="2")
        self.stderr_path = Path(log_dir) / f"{tree.label}.stderr"
        self.stderr = open(self.stderr_path, "w")
        flags = ["-P"] if sys.version_info >= (3, 11) else []  # no benchmarks/ first on the path
        self.proc = subprocess.Popen([sys.executable, *flags, str(WORKER), json.dumps(cfg)], cwd=tree.path,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.info = None

    def _read(self, prefix):
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        self.stderr.flush()
        tail = self.stderr_path.read_text()[-2000:]
        raise RuntimeError(f"the {self.tree.label} worker ended (rc {self.proc.wait()}):\n{tail}")

    def ready(self):
        self.info = self._read("SA_READY ")
        here = Path(self.info["amp_tf_file"]).resolve()
        if Path(self.tree.path).resolve() not in here.parents:
            raise RuntimeError(f"the {self.tree.label} worker imported amp_tf from {here}, not its tree")
        return self.info

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read("SA_REPLY ")

    def jiffies(self):
        """The child's user + system CPU time so far, in clock ticks (0 off Linux)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            return 0

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# ------------------------------------------------------------------ timing
def other_share(load, workers_jiffies):
    """The machine's CPU used by processes other than this one and its workers since `load` began."""
    end, start = proc_stat(), load.start
    if start is None or end is None or end["total"] <= start["total"]:
        return None
    busy = end["busy"] - start["busy"] - (end["own"] - start["own"]) - workers_jiffies
    return max(0.0, busy / (end["total"] - start["total"]))


def time_side_by_side(workers, measures, rounds, min_sample_s, log):
    """`({measure: {label: [wall s per call]}}, the same in process CPU s, {measure: calls per sample})`,
    each round in rotated worker order (HEAD, REV; REV, HEAD; ...)."""
    calls = {}
    for m in measures:  # calls per sample: the same for every worker (the larger need)
        need = [w.ask(op="calibrate", measure=m, min_s=0.0 if m == "train" else min_sample_s)["calls"]
                for w in workers]
        calls[m] = max(need)
    samples = {m: {w.tree.label: [] for w in workers} for m in measures}
    cpu = {m: {w.tree.label: [] for w in workers} for m in measures}
    for r in range(rounds):
        order = workers[r % len(workers):] + workers[: r % len(workers)]
        for m in measures:
            for w in order:
                got = w.ask(op="time", measure=m, calls=calls[m])
                samples[m][w.tree.label].append(got["s"])
                cpu[m][w.tree.label].append(got["cpu_s"])
        log(f"  round {r + 1}/{rounds}: " + "; ".join(
            m + " " + " / ".join(f"{samples[m][w.tree.label][-1] * 1e3:.1f}" for w in workers) + " ms"
            for m in measures))
    return samples, cpu, calls


def summarise(samples, cpu, per_call, head, rev):
    """Medians, speeds (images/s or ms per image) and HEAD/REV speed ratios per measure."""
    out = {}
    for m, by in samples.items():
        kind = MEASURES[m][1]
        row = {"label": MEASURES[m][0], "kind": kind, "images_per_call": per_call[m]}
        for side in (head, rev):
            med = statistics.median(by[side])
            row[side] = {"median_s": med, "min_s": min(by[side]), "samples_s": by[side],
                         "images_per_s": per_call[m] / med, "ms_per_image": 1e3 * med / per_call[m]}
        paired = [b / a for a, b in zip(by[head], by[rev])]  # REV time / HEAD time = HEAD speed ratio
        # the headline: the median of the per-round ratios (both sides of a round share the machine's
        # state); the ratio of the two medians pairs samples from different moments
        row["ratio"] = statistics.median(paired)
        row["ratio_of_medians"] = statistics.median(by[rev]) / statistics.median(by[head])
        row["ratio_min_s"] = min(by[rev]) / min(by[head])
        row["ratio_rounds"] = paired
        # process CPU time: less sensitive to other processes taking the cores (not to spinning threads)
        row["ratio_cpu"] = statistics.median(cpu[m][rev]) / statistics.median(cpu[m][head])
        if m in TARGETS:
            row["target"] = f">= {TARGETS[m]}"
            row["met"] = bool(row["ratio"] >= TARGETS[m])
            row["verdict"] = "met" if row["met"] else (
                f"within noise ({NOISE:.0%})" if row["ratio"] >= TARGETS[m] - NOISE else "MISSED")
        out[m] = row
    return out


# ------------------------------------------------------------------ report
def pct(share):
    return "?" if share is None else f"{share:.0%}"


def table(res):
    head, rev = res["head"]["label"], res["against"]["label"]
    lines = [f"| measure | {head} | {rev} | speed ratio {head} / {rev} (median of round ratios) | "
             "ratio of medians | fastest samples | CPU time | target |", "|---|---|---|---|---|---|---|---|"]
    for m, row in res["measures"].items():
        unit = (lambda s: f"{s['images_per_s']:,.0f} img/s") if row["kind"] == "rate" else (
            lambda s: f"{s['ms_per_image']:.2f} ms/img")
        target = "" if "target" not in row else f"{row['target']}: {row['verdict']}"
        lines.append(f"| {row['label']} | {unit(row[head])} | {unit(row[rev])} | **{row['ratio']:.2f}x** | "
                     f"{row['ratio_of_medians']:.2f}x | {row['ratio_min_s']:.2f}x | {row['ratio_cpu']:.2f}x | "
                     f"{target} |")
    return "\n".join(lines)


def markdown(res):
    s = res["settings"]
    skipped = "".join(f"\n- `{m}` not timed: {why}" for m, why in res["skipped"].items())
    return (f"# Speed of {res['head']['label']} against {res['against']['label']}\n\n"
            f"- {res['head']['label']}: {res['head']['subject']}\n"
            f"- {res['against']['label']}: {res['against']['subject']}\n"
            f"- CPU: {res['machine']['cpu_model']}, {res['machine']['cores']} cores; vector extensions: "
            f"{res['machine']['vector_extensions']}\n"
            f"- TensorFlow {res['machine']['tensorflow']}; `{res['command']}`; {s['rounds']} alternating "
            f"rounds, medians; other processes used {pct(res['contention']['other_processes_share'])} of the "
            f"CPU during the timed rounds\n"
            f"- resnet_small width {s['width']}, 28x28x1, batch {s['batch_size']}, K = {s['k']}; "
            f"training: {s['n_train']} images per epoch\n\n"
            f"{table(res)}\n\nSpeed ratio > 1: {res['head']['label']} is faster. {skipped}\n")


def main(argv=None):
    args = parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    ext = vector_extensions()
    parent = Path(tempfile.mkdtemp(prefix="amp_tf_against_"))
    trees, workers = [], []
    try:
        for rev in (args.head, args.against):
            trees.append(Tree(rev, parent))
        head, rev = trees
        if head.label == rev.label:
            raise ValueError(f"--head and --against are the same revision ({head.label})")
        log(f"speed against {rev.label}: {head.label} vs {rev.label} on {cpu_model()}, {os.cpu_count()} "
            f"cores; vector extensions: {ext['summary']}")
        cfg = {"batch_size": args.batch_size, "k": args.k, "width": args.width, "seed": args.seed,
               "n_train": args.n_train - args.n_train % args.batch_size, "measures": args.measures}
        workers = [Worker(t, cfg, parent) for t in trees]
        infos = [w.ready() for w in workers]  # both build at once (not timed)
        common = [m for m in args.measures if all(m in i["measures"] for i in infos)]
        skipped = {m: "; ".join(f"{w.tree.label}: {w.info['skipped'].get(m, 'not built')}" for w in workers
                                if m not in w.info["measures"]) for m in args.measures if m not in common}
        for m, why in skipped.items():
            log(f"  {m}: skipped ({why})")
        log(f"  {args.rounds} alternating rounds of {', '.join(common)} (ms per call, {head.label} / {rev.label})")
        load = Contention()
        jiffies0 = sum(w.jiffies() for w in workers)
        samples, cpu, calls = time_side_by_side(workers, common, args.rounds, args.min_sample_s, log)
        workers_jiffies = sum(w.jiffies() for w in workers) - jiffies0
        res = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.speed.against " + " ".join(argv if argv is not None else sys.argv[1:]),
            "head": {"label": head.label, "sha": head.sha, "subject": head.subject},
            "against": {"label": rev.label, "sha": rev.sha, "subject": rev.subject},
            "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "vector_extensions": ext["summary"],
                        "avx2": ext["avx2"], "avx512": ext["avx512"], "amx": ext["amx"],
                        "tensorflow": infos[0]["tensorflow"], "load_average_at_end": load_average()},
            "contention": {"other_processes_share": other_share(load, workers_jiffies),
                           "steal_share": load.steal_share()},
            "settings": {**cfg, "rounds": args.rounds, "min_sample_s": args.min_sample_s,
                         "calls_per_sample": calls},
            "measures": summarise(samples, cpu, {m: infos[0]["measures"][m] for m in common}, head.label, rev.label),
            "skipped": skipped,
        }
    finally:
        for w in workers:
            w.close()
        for t in trees:
            t.close()
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)
    print()
    print(table(res))
    print(f"\nspeed ratio > 1: {head.label} is faster; CPU: {res['machine']['cpu_model']} "
          f"({ext['summary']}); other processes: {pct(res['contention']['other_processes_share'])} of the CPU")
    if not args.no_write:
        stem = Path(args.out) if args.out else RESULTS / f"speed_against_{rev.label}"
        write_json(stem.with_suffix(".json"), res)
        stem.with_suffix(".md").write_text(markdown(res))
        print(f"wrote {stem.with_suffix('.json')} and .md")
    print(f"done in {time.perf_counter() - _T0:.0f} s")
    return res


if __name__ == "__main__":
    main()
