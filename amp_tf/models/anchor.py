"""Turn a trained image classifier into an anchored one without changing it.

Any functional or Sequential Keras model whose input reaches Conv2D layers first
can be anchored: the first convolutions get a kernel over ``[c, x - c]``
(``concat([W, W])``), every other layer is copied with its weights, and graphs
with op layers (``x + 3.0``, ``Add``, ``Multiply``, ...) anywhere are rebuilt
through ``keras.models.clone_model``.

Leading per-channel affine maps of the pixels (``Rescaling``, ``Normalization``,
our ``PixelNormalization``, constant ``x * s`` / ``x / s`` / ``x + b`` / ``x - b``
ops, in chains and inside nested models) are absorbed: the anchored backbone
drops them and `anchor_with_statistics` returns them as pixel statistics, with
which `amp_tf.method.anchoring.anchored_model` computes exactly the original function on
raw pixels. The composed map
``y = A * x + B`` is "normalise with mean ``-B / A`` and std ``1 / A``", and the
anchored model feeds ``[(c - mean) / std, (x - c) / std] = [A c + B, A (x - c)]``,
which the doubled first kernel sums to ``W (A x + B)``: what the original first
convolution saw.
"""
from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from amp_tf.models.stages import SUPPORTED as _SUPPORTED
from amp_tf.models.stages import Stage  # noqa: F401  (importable from here as before)
from amp_tf.models.stages import affine_stage as _affine_stage
from amp_tf.models.stages import describe_layer as _where
from amp_tf.models.stages import is_pixel_normalization as _is_pixel_normalization
from amp_tf.models.stages import stage_name as _stage_name
from amp_tf.models.stages import stage_statistics as _statistics

# Weightless layers that are linear in their input and channel-agnostic, so
# they may sit between the model input and the first Conv2D: f(c) + f(x - c)
# == f(x) still holds and they accept 2C channels unchanged.
_PASS_THROUGH = (
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.Identity,
)


class _State(NamedTuple):
    """What a raw-path tensor is: the affine stages applied so far, and whether zeros were padded."""

    stages: tuple
    padded: bool


def anchor_backbone(model: keras.Model) -> keras.Model:
    """Return an anchored copy of ``model`` that takes ``[c, x - c]`` (2C channels).

    Every Conv2D that consumes the input gets a kernel over 2C channels,
    initialised as ``concat([W, W], axis=2)`` (bias copied); all other weights
    (including BatchNorm moving statistics) are copied. Since
    ``W·c + W·(x - c) = W·x``, the anchored model computes exactly the original
    function for any anchor ``c``. Leading affine preprocessing (``Rescaling``,
    ``Normalization``, ``PixelNormalization``) is dropped: the anchored backbone
    takes *normalised* ``[c, x - c]``, and `anchor_with_statistics` returns the
    statistics that stand for it (`amp_tf.method.anchoring.anchored_model` builds the
    `AnchoredModel` from both). ``model``
    itself is left unchanged and shares no variables with the result.

    Args:
        model: A built Functional or Sequential model with a single rank-4
            ``(H, W, C)`` channels_last input whose first weighted layers are
            ``Conv2D`` layers fed by the (preprocessed) input.

    Returns:
        A functional ``keras.Model`` named ``f"{model.name}_anchored"`` with
        input shape ``(H, W, 2C)``.

    Raises:
        ValueError: If the model is unbuilt, subclassed, has several or non
            rank-4 inputs, or if the input reaches anything other than a
            ``Conv2D`` first (a Dense, DepthwiseConv2D, BatchNormalization, ...
            layer), naming the layer.

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
    return _anchor(model)[0]


def _anchor(model, state=None):
    """``(anchored backbone, stages)``: the anchored copy and the affine stages it absorbed."""
    anchored, out_state, stages = _rebuild(model, state)
    if out_state is not None:
        raise ValueError(f"A model output of {model.name!r} is the (preprocessed) input itself. {_SUPPORTED}")
    return anchored, stages


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model; got {type(model).__name__}.")
    if not isinstance(model, keras.Sequential) and not is_functional(model):
        raise ValueError(
            f"Cannot anchor a subclassed model ({type(model).__name__} {model.name!r}): its "
            "layer graph is unknown. Rebuild it with the functional API (keras.Input -> "
            f"layers -> keras.Model(inputs, outputs)). {_SUPPORTED}"
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
        names = [t.name for t in model_inputs]
        raise ValueError(
            f"Model {model.name!r} has {len(model_inputs)} inputs {names}; anchoring needs a "
            f"single image input (anchor the image branch as a model of its own). {_SUPPORTED}"
        )
    shape = tuple(model_inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected a rank-4 image input (batch, H, W, C); got shape {shape}. {_SUPPORTED}"
        )
    if shape[-1] is None:
        raise ValueError("The input channel count must be known to anchor a model.")
    return model_inputs[0]


def _rebuild(model, state=None):
    """Rebuilds ``model`` on a 2C-channel input; ``(anchored or None, output state or None, stages)``.

    The output state is not None when the model's output is still the raw
    (preprocessed, padded) input: a preprocessing block nested in a bigger model.
    """
    ref_input = _check_model(model)
    shape = tuple(ref_input.shape)
    new_input = keras.Input(
        shape=shape[1:3] + (2 * shape[-1],), dtype=ref_input.dtype,
        name=f"{ref_input.name}_anchored",
    )
    rebuilder = _Rebuilder(shape[-1], functional=not isinstance(model, keras.Sequential))
    rebuilder.state[id(new_input)] = state or _State((), False)
    if isinstance(model, keras.Sequential):
        x = new_input
        for layer in model.layers:
            x = rebuilder.call(layer, x)
        outputs = x
    else:
        outputs = keras.models.clone_model(
            model,
            input_tensors=keras.tree.map_structure(lambda _: new_input, model.input),
            clone_function=lambda layer: layer,  # real copies are made in call()
            call_function=rebuilder.call,
        ).outputs
        if not isinstance(model.output, (list, tuple, dict)):
            outputs = outputs[0]
    flat = keras.tree.flatten(outputs)
    raw_out = [id(t) in rebuilder.state for t in flat]
    if all(raw_out) and len(flat) == 1:
        anchored = None
        if flat[0] is not new_input:
            anchored = keras.Model(new_input, outputs, name=f"{model.name}_anchored")
            rebuilder.copy_weights()
        return anchored, rebuilder.state[id(flat[0])], ()
    if any(raw_out):
        raise ValueError(f"A model output of {model.name!r} is the (padded) input itself. {_SUPPORTED}")
    if not rebuilder.entries:
        raise ValueError(f"No Conv2D consumes the input of model {model.name!r}. {_SUPPORTED}")
    anchored = keras.Model(new_input, outputs, name=f"{model.name}_anchored")
    rebuilder.copy_weights()
    return anchored, None, rebuilder.common_stages(model)


def is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def model_normalization(model, mean=None, std=None):
    """``(mean, std)``: the pixel statistics that stand for ``model``'s leading preprocessing.

    The composition of its leading `PixelNormalization`, ``Rescaling``,
    ``Normalization`` and constant ``x * s + b`` ops, as per-channel statistics
    in pixel units (float32, shape (C,)); identity (0, 1) for a model without
    preprocessing. Given ``mean``/``std`` replace the model's `PixelNormalization`
    or, without one, are applied before its other preprocessing layers.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1),
        ...                       keras.layers.Conv2D(4, 3)])
        >>> [v.tolist() for v in model_normalization(m)]
        [[127.5, 127.5, 127.5], [127.5, 127.5, 127.5]]
    """
    _, stages = _anchor(model)
    return _statistics(model, stages, int(model.inputs[0].shape[-1]), mean, std)


class AnchoredParts(NamedTuple):
    """What an `AnchoredModel` is built from (`anchor_with_statistics`): plain Keras and numpy."""

    backbone: keras.Model
    mean: np.ndarray
    std: np.ndarray
    check_pixels: object  # the model's own PixelNormalization check (None without one)


def anchor_with_statistics(model, mean=None, std=None) -> AnchoredParts:
    """`anchor_backbone(model)` and the pixel statistics that stand for ``model``'s preprocessing.

    The backbone drops the leading affine preprocessing it absorbed; ``mean``/``std``
    (float32, (C,), `model_normalization`) put it back, so ``AnchoredModel(backbone,
    mean=mean, std=std)`` computes ``model``'s function on raw pixels. That model is
    built one layer up, by `amp_tf.method.anchoring.anchored_model`: this package stays plain Keras.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255),
        ...                       keras.layers.Conv2D(4, 3)])
        >>> parts = anchor_with_statistics(m)
        >>> parts.backbone.input.shape, parts.std.tolist(), parts.check_pixels
        ((None, 8, 8, 6), [255.0, 255.0, 255.0], None)
    """
    backbone, stages = _anchor(model)
    mean, std = _statistics(model, stages, int(model.inputs[0].shape[-1]), mean, std)
    own = [st.layer for st in stages if _is_pixel_normalization(st.layer)]
    return AnchoredParts(backbone, mean, std, own[0].check if own else None)


def _key(state):
    return tuple(id(st.layer) for st in state.stages)


class _Rebuilder:
    """Re-calls copies of the original layers on the new input, tracking which
    tensors still are the (affinely mapped, padded or cropped) raw input."""

    def __init__(self, channels, functional=True):
        self.channels = channels
        self.functional = functional
        self.state: dict[int, _State] = {}  # id(KerasTensor) -> what raw input it is
        self.copies: dict[int, tuple[str, object, object]] = {}
        self.entries: list[tuple[object, tuple]] = []  # (new entry layer, stages it sees)

    def call(self, layer, *args, **kwargs):
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        raw = [id(t) in self.state for t in tensors]
        if not any(raw):
            return self._copy(layer, "plain")(*args, **kwargs)
        where = _where(layer)
        if not all(raw) or len(tensors) != 1:
            raise ValueError(
                f"The model input is combined with other tensors in {where}; the "
                f"anchored input [c, x - c] cannot be fed there. {_SUPPORTED}"
            )
        tensor = tensors[0]
        state = self.state[id(tensor)]
        stage = _affine_stage(layer, args, tensor, self.channels)
        if stage is not None:
            if state.padded and np.any(stage.b != 0):
                raise ValueError(
                    f"{where} adds an offset after zero padding of the input; the padded zeros "
                    f"would move too, so it cannot be absorbed. Pad after the preprocessing. {_SUPPORTED}"
                )
            self._check_sole_consumer(layer, where)
            self.state[id(tensor)] = _State(state.stages + (stage,), state.padded)
            return tensor  # absorbed: the anchored model normalises c and x - c itself
        if isinstance(layer, _PASS_THROUGH):
            out = self._copy(layer, "plain")(*args, **kwargs)
            padded = state.padded or isinstance(layer, keras.layers.ZeroPadding2D)
            self.state.update({id(t): _State(state.stages, padded) for t in keras.tree.flatten(out)})
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
            self.entries.append((new, state))
            return new(*args, **kwargs)
        if isinstance(layer, keras.Model):
            return self._nested(layer, state, tensor, where, args, kwargs)
        raise ValueError(_unsupported_message(layer, where))

    def _nested(self, layer, state, tensor, where, args, kwargs):
        if id(layer) in self.copies:
            raise ValueError(f"Nested model {where} is called more than once on the input; cannot anchor it.")
        anchored, out_state, stages = _rebuild(layer, state)
        self.copies[id(layer)] = ("nested", layer, anchored)
        if out_state is not None:  # a preprocessing block: its output is still the raw input
            if anchored is None:
                self._check_sole_consumer(layer, where)
                self.state[id(tensor)] = out_state
                return tensor
            out = anchored(tensor)
            self.state[id(out)] = out_state
            return out
        self.entries.append((anchored, _State(stages, state.padded)))
        return anchored(*args, **kwargs)

    def _check_sole_consumer(self, layer, where):
        """An absorbed layer must be the only consumer of its input (its input is not used raw elsewhere)."""
        if not self.functional:
            return
        nodes = getattr(layer, "_inbound_nodes", [])
        ok = len(nodes) == 1 and len(nodes[0].input_tensors) == 1
        if ok:
            t = nodes[0].input_tensors[0]
            producer = t._keras_history.operation
            users = [n for n in producer._outbound_nodes if any(x is t for x in n.input_tensors)]
            ok = len(users) == 1
        if not ok:
            raise ValueError(
                f"The input before the preprocessing {where} is also used elsewhere (or the "
                f"layer is shared); only a preprocessing chain that is the input's sole consumer "
                f"can be absorbed. {_SUPPORTED}"
            )

    def common_stages(self, model):
        """The stages every entry sees (they must agree: one set of pixel statistics)."""
        keys = {_key(st) for _, st in self.entries}
        if len(keys) > 1:
            names = ", ".join(f"{new.name}: [{', '.join(_stage_name(s) for s in st.stages)}]"
                              for new, st in self.entries)
            raise ValueError(
                f"The first layers of {model.name!r} see the input through different "
                f"preprocessing ({names}); one set of pixel statistics cannot stand for them. {_SUPPORTED}"
            )
        return self.entries[0][1].stages

    def _copy(self, layer, kind):
        if id(layer) in self.copies:
            old_kind, _, new = self.copies[id(layer)]
            if old_kind != kind:
                raise ValueError(
                    f"Layer {layer.name!r} is shared between the input path and "
                    f"the rest of the model; cannot anchor it. {_SUPPORTED}"
                )
            return new
        if not isinstance(layer, keras.layers.Layer):
            new = layer  # an op layer (x + 3.0, ops.add, ...): stateless, reused as is
        elif isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, recursive=True)
        else:
            new = layer.__class__.from_config(layer.get_config())
        self.copies[id(layer)] = (kind, layer, new)
        return new

    def copy_weights(self):
        for kind, old, new in self.copies.values():
            if kind == "nested" or new is old:
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
    if isinstance(layer, keras.layers.DepthwiseConv2D) or "Separable" in type(layer).__name__:
        why = ("a depthwise filter sees each channel separately, so it cannot sum W·c + W·(x - c); "
               "put a Conv2D stem before it")
    elif isinstance(layer, keras.layers.Dense):
        why = ("a Dense layer on the image is a 1x1 convolution over the channels: build it as "
               "Conv2D(units, 1), or flatten after a Conv2D stem")
    elif isinstance(layer, keras.Model):
        why = "it is a subclassed model, whose layer graph is unknown; rebuild it with the functional API"
    elif getattr(layer, "weights", None):
        why = "its weights are not a Conv2D kernel over the input channels; put a Conv2D first"
    else:
        why = "it is not a per-channel affine, linear, channel-agnostic layer"
    return (
        f"The model input first reaches {where}, which cannot be anchored: {why}. "
        f"{_SUPPORTED}"
    )


def softmax_output(model):
    """The layer that applies a softmax to ``model``'s output (description string), or None.

    Anchored training and AMP work on logits; a model ending in
    ``activation="softmax"`` or a ``Softmax`` layer gives probabilities.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="head")])
        >>> softmax_output(m)
        "layer 'head' (Dense) has activation='softmax'"
    """
    outputs = getattr(model, "outputs", None) or []
    layer = _producer(outputs[0]) if len(outputs) == 1 else None
    for _ in range(64):
        if layer is None:
            return None
        if isinstance(layer, keras.layers.Softmax) or type(layer).__name__ == "Softmax":
            return f"{_where(layer)} is a softmax"
        if getattr(getattr(layer, "activation", None), "__name__", "") == "softmax":
            return f"{_where(layer)} has activation='softmax'"
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            layer = _producer(layer.outputs[0])
        elif isinstance(layer, _SHAPE_ONLY) and len(layer._inbound_nodes) == 1:
            layer = _producer(layer._inbound_nodes[0].input_tensors[0])
        else:
            return None
    return None


# Layers a softmax may hide behind at the end of a model.
_SHAPE_ONLY = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Identity, keras.layers.Dropout)


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history else None
