"""One registry of out-of-distribution (OOD) scores.

Convention: every score is **higher = more in-distribution (ID)**.  Metrics in
:mod:`amp_tf.detection.metrics` assume this orientation.

Usage::

    from amp_tf.method import scores
    scores.names()                      # ['amp', 'energy', 'entropy', ...]
    s = scores.get("amp")
    s(logits)                           # backend tensor, shape (B,)
    scores.to_numpy(s(logits))          # numpy, shape (B,)

Kinds of scores
---------------
* **Logit scores** (``needs_model=False, needs_fit=False``): pure functions of
  logits ``(B, N) -> (B,)``.  They are written with :mod:`keras.ops`, accept any
  array-like (numpy arrays, lists, backend tensors) and always return a
  *backend tensor*; they also work inside a ``tf.function`` (the serving export
  calls ``amp`` in-graph).  Convert with :func:`to_numpy` at the caller.
  Float64 inputs stay float64; integer inputs are cast to ``keras.config.floatx()``.
* **Model scores** (``needs_model=True``): need the differentiable model, e.g.
  :func:`odin` takes ``(logits_fn, images)`` and returns numpy ``(B,)``.
* **Fitted scores** (``needs_fit=True``): subclasses of :class:`FittedScore`
  that are first fitted on ID training data (Mahalanobis, Gram matrices, ...).

Adding a score = one function (or :class:`FittedScore` subclass) + one
``@register("name")`` line::

    @register("my_score", reference="Doe et al. 2024, Eq. 3")
    def my_score(logits):
        return -ops.min(ops.convert_to_tensor(logits), axis=-1)
"""
from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

__all__ = [
    "Score",
    "FittedScore",
    "register",
    "get",
    "names",
    "to_numpy",
    "amp",
    "msp",
    "energy",
    "max_logit",
    "entropy",
    "odin",
]


# --------------------------------------------------------------------------- #
# Score objects and registry
# --------------------------------------------------------------------------- #
class Score:
    """A named OOD score (higher = more in-distribution).

    Args:
        name: registry name.
        fn: the callable computing the score.
        needs_model: ``fn`` needs the (differentiable) model, not just logits.
        needs_fit: the score must be fitted on ID data before use.
        reference: paper reference and formula, shown in ``repr``/docs.
    """

    def __init__(self, name, fn, needs_model=False, needs_fit=False, reference=""):
        self.name = name
        self.fn = fn
        self.needs_model = bool(needs_model)
        self.needs_fit = bool(needs_fit)
        self.reference = reference
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        flags = []
        if self.needs_model:
            flags.append("needs_model=True")
        if self.needs_fit:
            flags.append("needs_fit=True")
        extra = (", " + ", ".join(flags)) if flags else ""
        return f"Score({self.name!r}{extra})"


class FittedScore(Score):
    """Base class for scores fitted on in-distribution data (``needs_fit=True``).

    Subclasses implement :meth:`fit` (learn statistics from ID training
    features/labels, return ``self``) and :meth:`score` (numpy ``(B,)``,
    higher = ID).  Calling the object calls :meth:`score`; it raises
    ``RuntimeError`` until :meth:`fit` has been called.

    Register the *class*; :func:`get` returns a fresh, unfitted instance each
    time (``get(name, **kwargs)`` forwards ``kwargs`` to the constructor)::

        @register("class_mean_distance", reference="toy example")
        class ClassMeanDistance(FittedScore):
            '''Negative distance to the nearest class mean of the features.'''

            def fit(self, features, labels):
                features = np.asarray(features, dtype=np.float64)
                labels = np.asarray(labels)
                self.means_ = np.stack(
                    [features[labels == c].mean(0) for c in np.unique(labels)])
                self.fitted = True
                return self

            def score(self, features):
                self._check_fitted()
                d = ((np.asarray(features)[:, None, :] - self.means_) ** 2).sum(-1)
                return -d.min(axis=1)
    """

    name = None  # set by @register
    reference = ""
    needs_model = False

    def __init__(self, **config):
        self.config = dict(config)
        self.fitted = False
        self.needs_fit = True
        self.fn = self.score

    def fit(self, *args, **kwargs):  # pragma: no cover - abstract
        """Fit on ID data; must set ``self.fitted = True`` and return ``self``."""
        raise NotImplementedError

    def score(self, *args, **kwargs):  # pragma: no cover - abstract
        """Return numpy scores ``(B,)``, higher = in-distribution."""
        raise NotImplementedError

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(
                f"score {self.name!r} is not fitted; call .fit(...) on ID training data first"
            )

    def __call__(self, *args, **kwargs):
        self._check_fitted()
        return self.score(*args, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, needs_fit=True, fitted={self.fitted})"


REGISTRY: dict[str, object] = {}  # name -> Score instance or FittedScore subclass

#: The names `amp_tf.detection.baselines` registers when it is imported (this module never imports it:
#: the registry is the lowest layer); `get` names the missing import for them.
BASELINE_NAMES = ("mahalanobis", "gram", "temperature_scaling", "mc_dropout_msp", "mc_dropout_entropy",
                  "mc_dropout_variance", "ensemble_msp", "ensemble_entropy", "ensemble_variance", "knn", "react")


def register(name, *, needs_model=False, reference=""):
    """Decorator registering a score function or a :class:`FittedScore` subclass.

    A function is wrapped in a :class:`Score`; the decorator returns the
    original function unchanged so it stays importable and callable.
    """

    def deco(obj):
        if name in REGISTRY:
            raise ValueError(f"score {name!r} is already registered")
        if inspect.isclass(obj):
            if not issubclass(obj, FittedScore):
                raise TypeError(
                    f"can only register functions or FittedScore subclasses, got class {obj!r}"
                )
            obj.name = name
            obj.reference = reference or obj.reference
            obj.needs_model = needs_model
            REGISTRY[name] = obj
        else:
            REGISTRY[name] = Score(name, obj, needs_model=needs_model, reference=reference)
        return obj

    return deco


def names(*, needs_model=None, needs_fit=None):
    """Sorted registered score names, optionally filtered by their flags.

    ``names(needs_model=False, needs_fit=False)`` lists the pure logit scores.
    """
    out = []
    for n, entry in REGISTRY.items():
        nm = bool(entry.needs_model)
        nf = inspect.isclass(entry) or bool(entry.needs_fit)
        if needs_model is not None and nm != bool(needs_model):
            continue
        if needs_fit is not None and nf != bool(needs_fit):
            continue
        out.append(n)
    return sorted(out)


def get(name, **kwargs):
    """Return the registered score ``name``.

    Plain scores return the shared :class:`Score` object (``kwargs`` not
    allowed).  Fitted scores return a fresh unfitted instance built with
    ``kwargs``.  Unknown names raise ``ValueError`` listing the known ones
    (and, for a baseline, the import that registers it: ``import amp_tf.detection.baselines``).
    """
    if isinstance(name, Score):
        return name
    if name in BASELINE_NAMES and name not in REGISTRY:
        raise ValueError(f"score {name!r} is not registered: it is a baseline of amp_tf.detection.baselines, which "
                         "registers its scores when imported; run `import amp_tf.detection.baselines` (after `import amp_tf`, "
                         "importing Keras does it).")
    if name not in REGISTRY:
        raise ValueError(f"unknown score {name!r}; known scores: {', '.join(names())}")
    entry = REGISTRY[name]
    if inspect.isclass(entry):
        return entry(**kwargs)
    if kwargs:
        raise TypeError(
            f"score {name!r} takes no constructor arguments; pass options when calling it"
        )
    return entry


def to_numpy(x):
    """Convert a backend tensor (or array-like) to a numpy array."""
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(ops.convert_to_numpy(x))


# --------------------------------------------------------------------------- #
# Logit scores
# --------------------------------------------------------------------------- #
def _logits(z):
    z = ops.convert_to_tensor(z)
    if not keras.backend.is_float_dtype(z.dtype):
        z = ops.cast(z, keras.config.floatx())
    if len(z.shape) != 2:
        raise ValueError(
            f"logits must have shape (batch, num_classes), got shape {tuple(z.shape)}; "
            "reshape to 2-D (one row per sample)"
        )
    return z


def _scaled(z, temperature):
    z = _logits(z)
    if temperature != 1.0:
        z = z / ops.cast(temperature, z.dtype)
    return z


@register(
    "amp",
    reference="AMP (neural network anchoring), Eq. 2: "
    "AMP(x) = -(1/N) sum_c log softmax(z/T)_c = logsumexp(z/T) - mean(z/T)",
)
def amp(logits, temperature=1.0):
    """AMP score: mean negative log-likelihood of the (calibrated) softmax.

    Paper Eq. 2 (anchoring / AMP)::

        AMP(x) = -(1/N) * sum_c log softmax(z/T)_c
               = logsumexp(z/T) - mean_c(z/T)        (identity used here)

    because ``log softmax(z)_c = z_c - logsumexp(z)``.  A uniform prediction
    (all logits equal) gives ``log N``, the minimum (by Jensen,
    ``logsumexp(z) = log(N * mean_c exp(z_c)) >= log N + mean_c z_c``); a
    confident (peaked) prediction gives a large value (about
    ``(N-1)/N * margin``), so AMP is already **higher = in-distribution**.
    Subtract ``log N`` if a zero-based score is wanted (ranking unchanged).  ``temperature`` (default 1) rescales logits
    for the calibrated softmax.
    """
    z = _scaled(logits, temperature)
    return ops.logsumexp(z, axis=-1) - ops.mean(z, axis=-1)


@register(
    "msp",
    reference="Hendrycks & Gimpel 2017 (baseline): MSP(x) = max_c softmax(z/T)_c",
)
def msp(logits, temperature=1.0):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    ``MSP(x) = max_c softmax(z/T)_c = exp(max_c z_c/T - logsumexp(z/T))``
    (computed in the stable log-domain form).  Higher = ID.
    """
    z = _scaled(logits, temperature)
    return ops.exp(ops.max(z, axis=-1) - ops.logsumexp(z, axis=-1))


@register(
    "energy",
    reference="Liu et al. 2020 (energy-based OOD): -E(x;T) = T * logsumexp(z/T)",
)
def energy(logits, temperature=1.0):
    """Negative free energy (Liu et al., NeurIPS 2020).

    ``-E(x; T) = T * logsumexp_c(z_c / T)``; with ``T=1`` simply
    ``logsumexp(z)``.  Higher = ID.
    """
    z = _scaled(logits, temperature)
    return ops.cast(temperature, z.dtype) * ops.logsumexp(z, axis=-1)


@register(
    "max_logit",
    reference="Hendrycks et al. 2022 (MaxLogit, scaling OOD detection): max_c z_c",
)
def max_logit(logits):
    """Maximum logit ``max_c z_c`` (Hendrycks et al., ICML 2022).  Higher = ID."""
    return ops.max(_logits(logits), axis=-1)


@register(
    "entropy",
    reference="Negated predictive entropy: -H(p) = sum_c p_c log p_c, p = softmax(z/T)",
)
def entropy(logits, temperature=1.0):
    """Negated softmax entropy ``-H(p) = sum_c p_c log p_c`` with ``p = softmax(z/T)``.

    Entropy is high for uncertain (OOD-like) predictions, so it is negated to
    keep the higher = ID convention; the maximum is 0 (one-hot prediction),
    the minimum ``-log N`` (uniform).
    """
    z = _scaled(logits, temperature)
    logp = ops.log_softmax(z, axis=-1)
    return ops.sum(ops.exp(logp) * logp, axis=-1)


# --------------------------------------------------------------------------- #
# Model scores
# --------------------------------------------------------------------------- #
@register(
    "odin",
    needs_model=True,
    reference="Liang, Li & Srikant 2018 (ODIN): x~ = x - eps*sign(-grad_x log max softmax(f(x)/T)); "
    "score = max softmax(f(x~)/T)",
)
def odin(logits_fn, images, temperature=1000.0, epsilon=0.0014, batch_size=256, cache=None):
    """ODIN score (Liang, Li & Srikant, ICLR 2018).

    Temperature scaling plus input pre-processing::

        x~    = x - eps * sign(-grad_x log max_c softmax(f(x)/T)_c)
        score = max_c softmax(f(x~)/T)_c

    i.e. a small step that *increases* the temperature-scaled max softmax
    (ID inputs react more strongly than OOD ones).  With ``epsilon=0`` and
    ``temperature=1`` this is exactly :func:`msp`.  Images are raw pixels
    (0..255): ``eps`` is in the paper's [0, 1] image units, so the step is
    ``255 * eps`` pixels, and the perturbed image is clipped to [0, 255].

    Args:
        logits_fn: differentiable callable ``images -> logits`` (a Keras model
            or a function); called in inference mode.
        images: array-like ``(B, ...)``.
        temperature: ``T`` (paper default 1000).
        epsilon: perturbation magnitude ``eps`` (paper default 0.0014).
        batch_size: processed in batches of this size.
        cache: optional dict kept by the caller across calls with the same
            model and settings: the compiled step is traced once, not per set.

    Returns:
        numpy ``(B,)`` scores, higher = ID.  Requires the TensorFlow backend.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"odin needs the TensorFlow backend (tf.GradientTape), got {keras.backend.backend()!r}"
        )
    import tensorflow as tf

    if isinstance(images, tf.Tensor):
        images = images.numpy()
    images = np.asarray(images)
    if images.ndim < 1 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty batch (B, ...)")
    if not np.issubdtype(images.dtype, np.floating):
        images = images.astype(keras.config.floatx())
    return odin_and_logits(logits_fn, images, temperature, epsilon, batch_size, cache)[0]


def odin_and_logits(logits_fn, images, temperature, epsilon, batch_size, cache):
    """`(odin scores, logits at the unperturbed images)`: ODIN's first forward pass gives
    the logits every other logit score needs, so a scorer computes them once."""
    import tensorflow as tf

    T, eps = float(temperature), float(epsilon)

    def call(x):
        if isinstance(logits_fn, keras.Model):
            return logits_fn(x, training=False)
        return logits_fn(x)

    def _float_logits(z):
        z = tf.convert_to_tensor(z)
        if z.dtype not in (tf.float32, tf.float64):  # e.g. mixed-precision float16
            z = tf.cast(z, tf.float32)
        return z

    key = (T, eps)
    if cache is not None and key in cache:
        return _run_odin(cache[key], images, batch_size)

    @tf.function(reduce_retracing=True)
    def step(x):  # one compiled graph per input shape, not eager ops per batch
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = _float_logits(call(x))
            z = logits / T
            log_msp = tf.reduce_max(z, axis=-1) - tf.reduce_logsumexp(z, axis=-1)
            loss = -tf.reduce_sum(log_msp)  # per-sample losses are independent
        if eps != 0.0:
            grad = tape.gradient(loss, x)
            x = tf.clip_by_value(x - tf.cast(255.0 * eps, x.dtype) * tf.sign(grad), 0.0, 255.0)
            z = _float_logits(call(x)) / T
        return tf.exp(tf.reduce_max(z, axis=-1) - tf.reduce_logsumexp(z, axis=-1)), logits

    if cache is not None:
        cache[key] = step
    return _run_odin(step, images, batch_size)


def _run_odin(step, images, batch_size):
    import tensorflow as tf

    from amp_tf.method.inference import batched

    return batched(lambda x: step(tf.convert_to_tensor(x)), images, batch_size, dtype=None)
