"""Quality: how well AMP and the baselines separate ID from OOD images, and the choices made on validation data.

* `ood` (`python -m benchmarks.quality.ood`): AMP against the baselines over seeds, in groups
  (near, far, covariate), with `ood_runs` (data, training, scoring) and `ood_report` (aggregation,
  markdown, the shipped row);
* `converged` (`python -m benchmarks.quality.converged`): the same protocol on converged models,
  resumable per seed; `converged_pilot` chose its recipe on validation data;
* `finetune_select`, `anchored_features`, `anchor_strategies`, `validate_models`: the selection
  studies behind the library's defaults (BENCHMARKS.md sections 2 to 5).

Imports `benchmarks.harness` only, never `benchmarks.speed` (tests/test_benchmarks_layers.py).
"""
