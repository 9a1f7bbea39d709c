"""The results page: BENCHMARKS.md's generated tables and the verdicts, from the committed results files.

* `tables`: every marked block of BENCHMARKS.md, rendered from `benchmarks/results/`
  (`python -m benchmarks.page [--check | --write]`);
* `verdicts`: the rules on the quality runs' group tables (`python -m benchmarks.page.verdicts A.json B.json`).

The top layer of the benchmarks: it reads results of both `benchmarks.speed` and `benchmarks.quality`
(and may import them and `benchmarks.harness`); nothing imports it. JSON only, no TensorFlow.
"""
