"""Turn a trained image classifier into an anchored one without changing it."""
from __future__ import annotations

import keras
from keras import ops

# Weightless layers that are linear in their input and channel-agnostic, so
# they may sit between the model input and the first Conv2D: f(c) + f(x - c)
# == f(x) still holds and they accept 2C channels unchanged.
_PASS_THROUGH = (
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.Identity,
)

_SUPPORTED = (
    "anchor_backbone supports models whose input (rank 4, channels_last) goes "
    "straight into one or more Conv2D layers (groups=1), optionally through "
    "ZeroPadding2D/Cropping2D/Identity, or into a nested Functional/Sequential "
    "model of that form."
)


def anchor_backbone(model: keras.Model) -> keras.Model:
    """Return an anchored copy of ``model`` that takes ``[c, x - c]`` (2C channels).

    Every Conv2D that consumes the input gets a kernel over 2C channels,
    initialised as ``concat([W, W], axis=2)`` (bias copied); all other weights
    (including BatchNorm moving statistics) are copied. Since
    ``W·c + W·(x - c) = W·x``, the anchored model computes exactly the original
    function for any anchor ``c``. ``model`` itself is left unchanged and shares
    no variables with the result.

    Args:
        model: A built Functional or Sequential model with a single rank-4
            ``(H, W, C)`` channels_last input whose first weighted layer is a
            ``Conv2D`` applied directly to the input.

    Returns:
        A functional ``keras.Model`` named ``f"{model.name}_anchored"`` with
        input shape ``(H, W, 2C)``.

    Raises:
        ValueError: If the model is unbuilt, subclassed, has several or non
            rank-4 inputs, or if the input reaches anything other than a
            ``Conv2D`` first: a weighted layer (Dense, DepthwiseConv2D,
            BatchNormalization, ...) or a non-linear / affine layer such as
            Rescaling or Normalization (normalise outside the model instead).

    Example:
        >>> import numpy as np, keras
        >>> m = keras.Sequential([keras.Input((8, 8, 3)),
        ...                       keras.layers.Conv2D(4, 3, name="stem_conv"),
        ...                       keras.layers.GlobalAveragePooling2D(),
        ...                       keras.layers.Dense(2)])
        >>> a = anchor_backbone(m)
        >>> a.input.shape
        (None, 8, 8, 6)
        >>> x, c = np.random.rand(2, 1, 8, 8, 3).astype("float32")
        >>> bool(np.allclose(m(x), a(np.concatenate([c, x - c], -1)), atol=1e-5))
        True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model; got {type(model).__name__}.")
    is_sequential = isinstance(model, keras.Sequential)
    if not is_sequential and not _is_functional(model):
        raise ValueError(
            f"Cannot anchor a subclassed model ({type(model).__name__}): its "
            f"layer graph is unknown. {_SUPPORTED}"
        )
    try:
        model_inputs = model.inputs
    except (AttributeError, ValueError):
        model_inputs = None
    if not model_inputs:
        raise ValueError(
            f"Model {model.name!r} is not built: give it a keras.Input (or call "
            "model.build(input_shape)) before anchoring it."
        )
    if len(model_inputs) != 1:
        raise ValueError(f"Expected a single image input; model has {len(model_inputs)}.")
    ref_input = model_inputs[0]
    shape = tuple(ref_input.shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected a rank-4 image input (batch, H, W, C); got shape {shape}. "
            f"{_SUPPORTED}"
        )
    if shape[-1] is None:
        raise ValueError("The input channel count must be known to anchor a model.")

    new_input = keras.Input(
        shape=shape[1:3] + (2 * shape[-1],), dtype=ref_input.dtype,
        name=f"{ref_input.name}_anchored",
    )
    rebuilder = _Rebuilder()
    if is_sequential:
        x = new_input
        rebuilder.raw.add(id(x))
        for layer in model.layers:
            x = rebuilder.call(layer, x)
        outputs = x
    else:
        rebuilder.raw.add(id(new_input))
        outputs = keras.models.clone_model(
            model,
            input_tensors=keras.tree.map_structure(lambda _: new_input, model.input),
            clone_function=lambda layer: layer,  # real copies are made in call()
            call_function=rebuilder.call,
        ).outputs
        if not isinstance(model.output, (list, tuple, dict)):
            outputs = outputs[0]
    if not rebuilder.entries:
        raise ValueError(f"No Conv2D consumes the input of model {model.name!r}. {_SUPPORTED}")
    if any(id(t) in rebuilder.raw for t in keras.tree.flatten(outputs)):
        raise ValueError(f"A model output is the (padded) input itself. {_SUPPORTED}")
    anchored = keras.Model(new_input, outputs, name=f"{model.name}_anchored")
    rebuilder.copy_weights()
    return anchored


def _is_pixel_normalization(layer) -> bool:
    from amp_tf.pixels import PixelNormalization

    return isinstance(layer, PixelNormalization)


def model_normalization(model):
    """``(mean, std)`` of the `PixelNormalization` a model starts with, or None."""
    from amp_tf.pixels import find_normalization

    layer = find_normalization(model)
    if layer is None:
        return None
    return (keras.ops.convert_to_numpy(layer.mean), keras.ops.convert_to_numpy(layer.std))


def anchored_model(model, **kwargs):
    """An `AnchoredModel` over ``anchor_backbone(model)``, normalising with ``model``'s statistics.

    Starting point of anchored fine-tuning: the result computes exactly
    ``model``'s function for any anchor (on raw pixels), and trains like any
    `AnchoredModel`.

    Args:
        model: a vanilla classifier (e.g. ``build_backbone(..., anchored=False)``),
            ideally trained, starting with a `PixelNormalization` layer.
        **kwargs: `AnchoredModel` arguments (``consistency``, ``seed``, ...);
            ``mean``/``std`` default to the model's own.

    Example:
        >>> from amp_tf.models import build_backbone
        >>> vanilla = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=8)
        >>> anchored_model(vanilla, seed=0).backbone.input.shape
        (None, 28, 28, 2)
    """
    from amp_tf.anchoring import AnchoredModel

    stats = model_normalization(model)
    if stats is not None:
        kwargs.setdefault("mean", stats[0])
        kwargs.setdefault("std", stats[1])
    return AnchoredModel(anchor_backbone(model), **kwargs)


def _is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


class _Rebuilder:
    """Re-calls copies of the original layers on the new input, tracking which
    tensors still are the (linearly padded/cropped) raw input."""

    def __init__(self):
        self.raw: set[int] = set()  # ids of KerasTensors equal to the raw input
        self.copies: dict[int, tuple[str, keras.layers.Layer, keras.layers.Layer]] = {}
        self.entries: list[keras.layers.Layer] = []
        self.normalization = None

    def call(self, layer, *args, **kwargs):
        tensors = [
            t for t in keras.tree.flatten((args, kwargs))
            if isinstance(t, keras.KerasTensor)
        ]
        raw = [id(t) in self.raw for t in tensors]
        if not any(raw):
            return self._copy(layer, "plain")(*args, **kwargs)
        where = f"layer {layer.name!r} ({type(layer).__name__})"
        if not all(raw) or len(tensors) != 1:
            raise ValueError(
                f"The model input is combined with other tensors in {where}; the "
                f"anchored input [c, x - c] cannot be fed there. {_SUPPORTED}"
            )
        if _is_pixel_normalization(layer):
            # Raw pixels in: the anchored model normalises c and x - c itself
            # (AnchoredModel / AnchoredPredictor), so the anchored backbone takes
            # the normalised [c, x - c] and this layer is dropped; its statistics
            # are read with `model_normalization(model)`.
            self.normalization = layer
            return args[0]
        if isinstance(layer, _PASS_THROUGH):
            out = self._copy(layer, "plain")(*args, **kwargs)
            self.raw.update(id(t) for t in keras.tree.flatten(out))
            return out
        if isinstance(layer, keras.layers.Conv2D):
            config = layer.get_config()
            if config.get("groups", 1) != 1 or config.get("data_format") == "channels_first":
                raise ValueError(
                    f"The first conv {where} must have groups=1 and channels_last "
                    f"data; got groups={config.get('groups')}, "
                    f"data_format={config.get('data_format')!r}. {_SUPPORTED}"
                )
            new = self._copy(layer, "entry")
            self.entries.append(new)
            return new(*args, **kwargs)
        if isinstance(layer, keras.Model) and (
            isinstance(layer, keras.Sequential) or _is_functional(layer)
        ):
            new = self._copy(layer, "nested")
            self.entries.append(new)
            return new(*args, **kwargs)
        raise ValueError(_unsupported_message(layer, where))

    def _copy(self, layer, kind):
        if id(layer) in self.copies:
            old_kind, _, new = self.copies[id(layer)]
            if old_kind != kind:
                raise ValueError(
                    f"Layer {layer.name!r} is shared between the input path and "
                    f"the rest of the model; cannot anchor it. {_SUPPORTED}"
                )
            return new
        if kind == "nested":
            new = anchor_backbone(layer)  # already carries copied weights
        elif isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, recursive=True)
        else:
            new = layer.__class__.from_config(layer.get_config())
        self.copies[id(layer)] = (kind, layer, new)
        return new

    def copy_weights(self):
        for kind, old, new in self.copies.values():
            if kind == "nested":
                continue
            if kind == "plain" and isinstance(old, keras.Model):
                new.set_weights(old.get_weights())
                continue
            if len(old.weights) != len(new.weights):
                raise RuntimeError(f"Weight mismatch while copying layer {old.name!r}.")
            for v_old, v_new in zip(old.weights, new.weights):
                value = v_old.value
                if kind == "entry" and v_old is old.kernel:
                    value = ops.concatenate([value, value], axis=2)
                v_new.assign(value)


def _unsupported_message(layer, where) -> str:
    if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
        why = (
            "it is affine, not linear ((x - m) / s), so normalising c and x - c "
            "separately does not add up to normalising x; do the normalisation "
            "outside the model (in the data pipeline) and anchor the normalised images"
        )
    elif isinstance(layer, keras.layers.DepthwiseConv2D) or "Separable" in type(layer).__name__:
        why = "a depthwise filter sees each channel separately, so it cannot sum W·c + W·(x - c)"
    elif layer.weights:
        why = "its weights are not a Conv2D kernel over the input channels"
    else:
        why = "it is not a linear, channel-agnostic layer"
    return (
        f"The model input first reaches {where}, which cannot be anchored: {why}. "
        f"{_SUPPORTED}"
    )
