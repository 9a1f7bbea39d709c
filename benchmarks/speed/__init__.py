"""Speed: what anchoring and AMP cost in time and memory, against a vanilla backbone, PyTorch and earlier revisions.

* `main` (`python -m benchmarks.speed`): anchored training overhead, AMP inference, K and batch
  scaling; its sections in `core`, `extra` (the peer and internals sections) and `report`;
* `against` (`python -m benchmarks.speed.against`, also `python -m benchmarks.speed --against REV`):
  this revision against an earlier one side by side, one `against_worker.py` process per revision;
* `peer` (`python -m benchmarks.speed.peer`): amp-tf against a PyTorch reference, with `peer_models`
  (the TensorFlow contenders), `peer_torch` (the PyTorch reference), `peer_profile`, `peer_report`;
* `litert` (`python -m benchmarks.speed.litert`): the exported `.tflite` latency;
* `shipped_cost` (`python -m benchmarks.speed.shipped_cost`): the shipped detector's serving cost.

Imports `benchmarks.harness` only, never `benchmarks.quality` (tests/test_benchmarks_layers.py).
"""
