"""SGD with the paper's (PyTorch) coupled L2 weight decay, and a factory for either kind.

The paper trains with PyTorch's `torch.optim.SGD(lr, momentum=0.9,
weight_decay=5e-4)` (Appendix B). PyTorch adds the decay to the gradient
*before* the momentum buffer ("coupled" / L2 decay)::

    g   = grad + wd * w
    buf = momentum * buf + g        # first step: buf = g (no dampening)
    w   = w - lr * buf              # nesterov: w = w - lr * (g + momentum * buf)

Keras 3's `keras.optimizers.SGD(weight_decay=wd)` instead shrinks the weights
directly, outside the momentum (`w -= lr * wd * w`, "decoupled"), and keeps a
velocity that already contains the learning rate (`v = momentum * v - lr * g;
w += v`). The two differ whenever wd > 0, and, for the velocity form, also
right after a learning-rate drop (Keras' velocity still carries the old lr).

`CoupledSGD` reproduces the PyTorch update exactly, learning-rate schedules
included: it keeps PyTorch's lr-free buffer and leaves Keras' own decoupled
`weight_decay` unset (it refuses a non-empty one), so the decay is applied once.
It works under `tf.distribute` strategies (the update runs through Keras'
per-variable `update_step`), with a `LearningRateSchedule`, honours
`exclude_from_weight_decay`, and round-trips through `get_config` and `.keras`
files.

`make_sgd(..., weight_decay_mode="coupled" | "decoupled")` builds either.

Example:

>>> opt = make_sgd(0.1, momentum=0.9, weight_decay=5e-4)
>>> type(opt).__name__, opt.weight_decay_l2
('CoupledSGD', 0.0005)
>>> type(make_sgd(0.1, weight_decay_mode="decoupled")).__name__
'SGD'
"""

from __future__ import annotations

import math

import keras
from keras import ops

WEIGHT_DECAY_MODES = ("coupled", "decoupled")


def _check_weight_decay(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a float >= 0, got {value!r}.") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}.")
    return v


def _check_momentum(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"momentum: expected a float in [0, 1], got {value!r}.") from None
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"momentum: expected a float in [0, 1], got {value!r}.")
    return v


@keras.saving.register_keras_serializable(package="amp_tf")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with momentum and PyTorch-style (coupled, L2) weight decay.

    Per variable `w` with gradient `grad` (PyTorch's `torch.optim.SGD` with
    `dampening=0`)::

        g   = grad + weight_decay_l2 * w
        buf = momentum * buf + g
        w   = w - lr * buf                       (nesterov: w - lr * (g + momentum * buf))

    With `momentum=0`: `w = w - lr * g`.

    Args:
        learning_rate: float, `LearningRateSchedule` or callable, as for Keras' SGD.
        momentum: float in [0, 1].
        nesterov: PyTorch's Nesterov variant (see above).
        weight_decay_l2: float >= 0, the coefficient added to the gradient.
        weight_decay: Keras' decoupled decay; must stay None (or 0): use
            `keras.optimizers.SGD` / `make_sgd(weight_decay_mode="decoupled")` for it.
        **kwargs: the other Keras optimizer arguments (clipnorm, use_ema,
            gradient_accumulation_steps, loss_scale_factor, name, ...).

    The momentum slots hold PyTorch's buffer (no learning rate in it), so they are
    not interchangeable with a `keras.optimizers.SGD` checkpoint's slots.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, weight_decay_l2=5e-4,
                 weight_decay=None, **kwargs):
        if weight_decay:
            raise ValueError(
                "CoupledSGD: `weight_decay` is Keras' decoupled decay and would be applied on "
                f"top of the coupled one; got weight_decay={weight_decay!r}. Pass the coefficient "
                "as `weight_decay_l2`, or use make_sgd(..., weight_decay_mode='decoupled')."
            )
        momentum = _check_momentum(momentum)
        if nesterov and momentum == 0.0:
            raise ValueError("CoupledSGD: nesterov=True needs momentum > 0 (as in PyTorch).")
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=bool(nesterov),
            weight_decay=None, **kwargs,
        )
        self.weight_decay_l2 = _check_weight_decay(weight_decay_l2, "weight_decay_l2")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        # A sparse gradient (IndexedSlices) becomes dense here: the decay term is dense.
        g = ops.cast(ops.convert_to_tensor(gradient), variable.dtype)
        if self.weight_decay_l2 and self._use_weight_decay(variable):
            g = ops.add(g, ops.multiply(ops.cast(self.weight_decay_l2, variable.dtype), variable))
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(g, lr))
            return
        m = self.momentums[self._get_variable_index(variable)]
        mom = ops.cast(self.momentum, variable.dtype)
        # buf starts at zero, so the first step gives buf = g, as in PyTorch.
        buf = ops.add(ops.multiply(m, mom), g)
        self.assign(m, buf)
        step = ops.add(g, ops.multiply(buf, mom)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(step, lr))

    def get_config(self):
        config = super().get_config()
        config["weight_decay_l2"] = self.weight_decay_l2
        return config


def make_sgd(learning_rate, momentum=0.9, weight_decay=5e-4, weight_decay_mode="coupled",
             nesterov=False, **kwargs):
    """SGD with momentum and weight decay of either kind.

    Args:
        learning_rate: float, `LearningRateSchedule` or callable.
        momentum: float in [0, 1].
        weight_decay: float >= 0 (0 = none).
        weight_decay_mode: `"coupled"`: the paper's PyTorch SGD (decay added to the
            gradient before momentum), a `CoupledSGD`; `"decoupled"`:
            `keras.optimizers.SGD(weight_decay=...)` (`w -= lr * wd * w` outside the
            momentum; this repository's behaviour before the option existed).
        nesterov: Nesterov momentum (each optimizer's own variant).
        **kwargs: passed to the optimizer (clipnorm, name, ...).

    Raises:
        ValueError: negative/non-finite `weight_decay`, `momentum` outside [0, 1],
            or an unknown `weight_decay_mode`.
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"weight_decay_mode: expected one of {list(WEIGHT_DECAY_MODES)}, "
            f"got {weight_decay_mode!r}."
        )
    wd = _check_weight_decay(weight_decay if weight_decay is not None else 0.0, "weight_decay")
    momentum = _check_momentum(momentum)
    if weight_decay_mode == "coupled":
        return CoupledSGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                          weight_decay_l2=wd, **kwargs)
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                                weight_decay=wd or None, **kwargs)
