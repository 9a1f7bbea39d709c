"""Monte-Carlo dropout (Gal & Ghahramani, ICML 2016).

"Dropout as a Bayesian approximation: representing model uncertainty in deep
learning".  ``S`` stochastic forward passes with dropout active give softmax
predictions ``p^(1..S)``; with ``p_bar = (1/S) sum_s p^(s)``::

    mc_dropout_msp      = max_k p_bar_k
    mc_dropout_entropy  = sum_k p_bar_k log p_bar_k            (= -H(p_bar))
    mc_dropout_variance = -(1/K) sum_k Var_s(p^(s)_k)          (population variance)

all higher = in-distribution.

Only dropout may be stochastic: ``model(x, training=True)`` would also put
BatchNormalization into training mode (batch statistics, and in Keras 3 an
update of its moving mean/variance).  :func:`mc_dropout_model` therefore
rebuilds the functional graph with ``keras.models.clone_model``, keeping
every layer *object* (weights are shared, nothing is copied) except the
dropout layers (``Dropout`` and subclasses such as ``SpatialDropout2D``,
``GaussianDropout``, ``AlphaDropout``; they hold no weights), which are
replaced by copies whose ``call`` always runs with ``training=True``.  The
copy is then called with ``training=False``, so BatchNorm uses its moving
statistics and never updates them.

The model must have been built with dropout: e.g.
``build_backbone("wrn40_2", ..., dropout=0.3)`` (WRN's default) or
``build_backbone("resnet18", ..., dropout=0.2)`` (ResNets default to none).

Example::

    from amp_tf.detection.baselines.mc_dropout import MCDropout
    mc = MCDropout(model, num_passes=20, seed=0)
    s = mc.scores(x_test)          # {"msp", "entropy", "variance"} -> (N,)
    # or one registered score:
    from amp_tf import scores; import amp_tf.detection.baselines
    scores.get("mc_dropout_entropy")(model, x_test, num_passes=20)
"""
from __future__ import annotations

import keras
import numpy as np

from amp_tf.detection.baselines import _common
from amp_tf.method.scores import register

__all__ = ["MCDropout", "mc_dropout_model", "mc_dropout_scores", "dropout_layers",
           "mc_dropout_msp", "mc_dropout_entropy", "mc_dropout_variance"]

NAMES = ("mc_dropout_msp", "mc_dropout_entropy", "mc_dropout_variance")

_DROPOUT_TYPES = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout)
_MC_CLASSES: dict[type, type] = {}


def _always_training(cls):
    """Subclass of dropout class ``cls`` whose ``call`` ignores ``training`` (always on)."""
    if cls not in _MC_CLASSES:

        class MCDropoutLayer(cls):
            def call(self, inputs, training=None):
                return super().call(inputs, training=True)

        MCDropoutLayer.__name__ = MCDropoutLayer.__qualname__ = f"MC{cls.__name__}"
        _MC_CLASSES[cls] = MCDropoutLayer
    return _MC_CLASSES[cls]


def _all_layers(model):
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def dropout_layers(model):
    """The dropout layers (rate > 0) of ``model``, nested models included."""
    return [l for l in _all_layers(model)
            if isinstance(l, _DROPOUT_TYPES) and float(getattr(l, "rate", 0.0)) > 0]


def mc_dropout_model(model, seed=None):
    """A model sharing ``model``'s layers whose dropout is always active.

    Call it with ``training=False``: BatchNorm (and everything else) runs in
    inference mode, only the dropout layers sample masks.

    Args:
        model: a functional or Sequential ``keras.Model`` with dropout layers.
        seed: base seed of the dropout masks (layer ``i`` gets ``seed + i``);
            ``None`` = unseeded.

    Raises:
        ValueError: no dropout layer with rate > 0 (build the model with
            ``dropout > 0``), or a subclassed model (graph unknown).
    """
    _common.check_model(model)
    if not dropout_layers(model):
        raise ValueError(
            f"model {model.name!r} has no Dropout layers (rate > 0); MC dropout needs a model "
            "trained with dropout, e.g. build_backbone(name, ..., dropout=0.3) (ResNet "
            "backbones default to dropout=0)"
        )
    from keras.src.models.functional import Functional

    if not isinstance(model, (Functional, keras.Sequential)):
        raise ValueError(
            f"MC dropout needs a functional or Sequential model to rebuild its graph; "
            f"got a subclassed {type(model).__name__}"
        )
    counter = [0]

    def clone(layer):
        if isinstance(layer, _DROPOUT_TYPES):
            config = layer.get_config()
            if seed is not None and "seed" in config:
                config["seed"] = int(seed) + counter[0]
            counter[0] += 1
            return _always_training(type(layer)).from_config(config)
        if isinstance(layer, keras.Model):
            if dropout_layers(layer):
                return mc_dropout_model(layer, None if seed is None else int(seed) + 1000 * (counter[0] + 1))
            return layer
        return layer  # shared: same weights, nothing copied

    return keras.models.clone_model(model, clone_function=clone)


class MCDropout:
    """``num_passes`` stochastic passes of ``model`` with only dropout active.

    Args:
        model: a model with dropout layers (see :func:`mc_dropout_model`).
        num_passes: ``S`` (default 20).
        seed: seed of the dropout masks (``None`` = unseeded).
        batch_size: inputs per forward pass.
        from_logits: ``model`` outputs logits (default) rather than probabilities.
    """

    def __init__(self, model, num_passes=20, seed=None, batch_size=256, from_logits=True):
        if int(num_passes) < 2:
            raise ValueError(f"num_passes must be >= 2, got {num_passes}")
        self.mc_model = mc_dropout_model(model, seed)
        self.num_passes = int(num_passes)
        self.seed = seed
        self.batch_size = int(batch_size)
        self.from_logits = bool(from_logits)
        gens = [g for l in _all_layers(self.mc_model) if isinstance(l, _DROPOUT_TYPES)
                for g in vars(l).values() if isinstance(g, keras.random.SeedGenerator)]
        self._seed_states = [(g.state, np.asarray(g.state.numpy())) for g in gens]

    def probs(self, x):
        """Softmax predictions of every pass, numpy ``(S, N, K)`` float64.

        With a ``seed`` every call draws the same masks (the dropout seed
        states are reset first), so repeated calls are reproducible.
        """
        x = _common.as_inputs(x)
        if self.seed is not None:
            for var, value in self._seed_states:
                var.assign(value)
        return np.stack([
            _common.softmax(_common.model_logits(self.mc_model, x, self.batch_size),
                            self.from_logits)
            for _ in range(self.num_passes)
        ])

    def scores(self, x):
        """``{"msp", "entropy", "variance"}`` -> numpy ``(N,)`` (higher = ID) from one set of passes."""
        return _common.predictive_scores(self.probs(x))


def mc_dropout_scores(model, images, num_passes=20, seed=None, batch_size=256, from_logits=True):
    """All three MC-dropout scores from the same ``num_passes`` passes (dict of ``(N,)``)."""
    return MCDropout(model, num_passes, seed, batch_size, from_logits).scores(images)


@register("mc_dropout_msp", needs_model=True,
          reference="Gal & Ghahramani 2016 (MC dropout): max_k mean_s softmax(f_s(x))_k")
def mc_dropout_msp(model, images, num_passes=20, seed=None, batch_size=256, from_logits=True):
    """MSP of the mean MC-dropout prediction, numpy ``(N,)`` (see module docstring)."""
    return mc_dropout_scores(model, images, num_passes, seed, batch_size, from_logits)["msp"]


@register("mc_dropout_entropy", needs_model=True,
          reference="Gal & Ghahramani 2016 (MC dropout): -H(mean_s softmax(f_s(x)))")
def mc_dropout_entropy(model, images, num_passes=20, seed=None, batch_size=256, from_logits=True):
    """Negative entropy of the mean MC-dropout prediction, numpy ``(N,)``."""
    return mc_dropout_scores(model, images, num_passes, seed, batch_size, from_logits)["entropy"]


@register("mc_dropout_variance", needs_model=True,
          reference="Gal & Ghahramani 2016 (MC dropout): -(1/K) sum_k Var_s softmax(f_s(x))_k")
def mc_dropout_variance(model, images, num_passes=20, seed=None, batch_size=256, from_logits=True):
    """Negative mean (over classes) variance of the softmax across passes, numpy ``(N,)``."""
    return mc_dropout_scores(model, images, num_passes, seed, batch_size, from_logits)["variance"]
