"""The speed targets of `benchmarks.speed` (no TensorFlow import): the ratio, the comparison and the bar,
and `verdict`, which the benchmark writes into its JSON and `benchmarks.page` re-applies to old runs."""

from __future__ import annotations

TARGETS = {  # None: reported without a target
    "train_overhead": ("<=", 1.05),
    "amp_k_efficiency": (">=", 0.95),
    "folded_speedup": None,
    "tiled_vs_loop": (">=", 1.0),
}
PEER_TARGETS = {  # amp-tf / PyTorch on the same CPU, images/s (section "peer"; issue 29's targets)
    "peer_training": (">=", 1.0),
    "peer_amp_inference": (">=", 1.5),
}


def verdict(name, value):
    spec = {**TARGETS, **PEER_TARGETS}[name]
    if spec is None:
        return {"value": value, "target": None, "met": None}
    op, target = spec
    ok = value <= target if op == "<=" else value >= target
    return {"value": value, "target": f"{op} {target}", "met": bool(ok)}
