"""AMP inference with the first convolution folded over anchors and images.

The anchored backbone starts with a linear convolution over `[c, x - c]`. With
its kernel split on the input-channel axis, `W = concat([W_anc, W_res])`:

    conv_W([c, x - c]) = conv_{W_anc}(c) + conv_{W_res}(x - c)
                       = conv_{W_res}(x) + conv_{W_anc - W_res}(c)

For K anchors and B images the residual term is computed once per image (B
convolutions over C channels) and the anchor term once per anchor (K
convolutions), then added with broadcasting into the K*B stem outputs; the bias
is added once and the stem's activation (if any) applied afterwards. Only the
rest of the backbone runs on all K*B rows. This is exact for any stride,
padding ("same" zero padding is linear too) and dilation, because both terms use
the stem layer's own convolution op.

`FoldedAnchoredPredictor` subclasses `AnchoredPredictor` and only overrides
`per_anchor_logits`, so its outputs, input checks, `predict`, serialisation,
`amp_tf.serve.export.export_for_serving` and `amp_tf.serve.export.export_tflite` (which
traces `fixed_shape_outputs`: the rest of the backbone on all K*B stem outputs
in one call) are the same.

How much this saves is the stem's share of the backbone's work: small for
3x3 stems over few channels (resnet_small, the CIFAR ResNets, WRN), larger for
wide ImageNet stems (7x7/2 over 3 channels into 64).

Example:

>>> import numpy as np
>>> from amp_tf.models import build_backbone
>>> from amp_tf.method.predictor import AnchoredPredictor, select_anchors
>>> backbone = build_backbone("resnet_small", (28, 28, 1), 10, anchored=True, width=8)
>>> train = np.random.uniform(0, 255, (50, 28, 28, 1)).astype("float32")
>>> anchors = select_anchors(train, k=5)
>>> stats = dict(mean=127.0, std=74.0)   # the training images' statistics, pixel units
>>> folded = FoldedAnchoredPredictor(backbone, anchors, **stats).predict(train[:4])
>>> tiled = AnchoredPredictor(backbone, anchors, **stats).predict(train[:4])
>>> bool(np.allclose(folded["amp_score"], tiled["amp_score"], atol=1e-5))
True
"""

from __future__ import annotations

import keras
import tensorflow as tf

from amp_tf.models.anchor import is_functional
from amp_tf.method.predictor import AnchoredPredictor

_SUPPORTED = (
    "Folding needs a functional or Sequential backbone whose single rank-4 "
    "(channels_last) input goes straight into one Conv2D (groups=1, 2C input "
    "channels), with nothing downstream reading the input again."
)


def find_stem(backbone):
    """The Conv2D that consumes the backbone's input, and its output tensor.

    Returns:
        `(stem_layer, stem_output)`: the layer and the symbolic tensor it
        produces on the backbone's input.

    Raises:
        ValueError: when the backbone is not functional/Sequential, has several
            or non rank-4 inputs, or its input reaches anything other than a
            single Conv2D first (Dense, DepthwiseConv2D, BatchNormalization,
            padding/rescaling layers, several consumers, ...).
    """
    inp = _model_input(backbone)
    layer, node = _input_consumer(backbone, inp)
    _check_stem(layer, node)
    return layer, node.output_tensors[0]


def _model_input(backbone):
    """The one rank-4 input tensor of a functional or Sequential `backbone` (else ValueError)."""
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"backbone: expected a keras.Model, got {type(backbone).__name__}. {_SUPPORTED}")
    if not (isinstance(backbone, keras.Sequential) or is_functional(backbone)):
        raise ValueError(
            f"backbone: cannot fold a subclassed model ({type(backbone).__name__}): "
            f"its layer graph is unknown. {_SUPPORTED}"
        )
    try:
        inputs = backbone.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"backbone: expected one built image input, got {0 if not inputs else len(inputs)}. {_SUPPORTED}"
        )
    inp = inputs[0]
    if len(inp.shape) != 4:
        raise ValueError(f"backbone: expected a rank-4 input (B, H, W, 2C), got shape {tuple(inp.shape)}.")
    return inp


def _input_consumer(backbone, inp):
    """``(layer, node)``: the one layer call that reads `inp` (else ValueError)."""
    consumers = []  # (layer, node) pairs reading the model input
    for layer in backbone.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if any(t is inp for t in node.input_tensors):
                consumers.append((layer, node))
    if not consumers:
        raise ValueError(f"backbone: no layer consumes the input of {backbone.name!r}. {_SUPPORTED}")
    if len(consumers) > 1:
        names = ", ".join(repr(layer.name) for layer, _ in consumers)
        raise ValueError(
            f"backbone: its input feeds several layers ({names}); the stem must be the only "
            f"consumer. {_SUPPORTED}"
        )
    return consumers[0]


def _check_stem(layer, node):
    """ValueError unless `layer` is a plain channels-last Conv2D over an even channel count 2C."""
    where = f"layer {layer.name!r} ({type(layer).__name__})"
    if not isinstance(layer, keras.layers.Conv2D):
        what = "a weighted layer that is not a Conv2D" if layer.weights else "a layer that is not a Conv2D"
        raise ValueError(
            f"backbone: the first layer on the input is {where}, {what}; the first weighted "
            f"layer must be a Conv2D applied directly to the input. {_SUPPORTED}"
        )
    if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
        raise ValueError(f"backbone: {where} takes or returns several tensors. {_SUPPORTED}")
    if layer.groups != 1 or layer.data_format != "channels_last":
        raise ValueError(
            f"backbone: the stem {where} must have groups=1 and channels_last data; got "
            f"groups={layer.groups}, data_format={layer.data_format!r}. {_SUPPORTED}"
        )
    channels = layer.kernel.shape[2]
    if channels % 2:
        raise ValueError(
            f"backbone: the stem {where} has {channels} input channels; an anchored stem "
            f"has an even count 2C (anchor + residual)."
        )


def split_kernel(stem):
    """`(w_res, w_delta, bias)` of an anchored stem conv, as current tensors.

    `w_res` is the residual half of the kernel (channels C..2C), `w_delta` the
    anchor half minus the residual half; `bias` is None without one.
    """
    kernel = keras.ops.convert_to_tensor(stem.kernel)
    c = kernel.shape[2] // 2
    w_anc, w_res = kernel[:, :, :c], kernel[:, :, c:]
    bias = keras.ops.convert_to_tensor(stem.bias) if stem.use_bias else None
    return w_res, w_anc - w_res, bias


def split_stem(backbone):
    """Splits an anchored backbone at its first convolution.

    Returns:
        `(w_res, w_delta, bias, rest_model)`: the residual half of the stem
        kernel, anchor half minus residual half, the bias (None without one),
        and a `keras.Model` from the stem's output (after its activation) to the
        backbone's output. `rest_model` reuses the backbone's layers, so it
        shares their (trained) weights; nothing is copied.

    Raises:
        ValueError: see `find_stem`; also when the graph after the stem reads
            the backbone's input again (e.g. a skip connection from the input).
    """
    stem, rest = _rest_model(backbone)
    w_res, w_delta, bias = split_kernel(stem)
    return w_res, w_delta, bias, rest


def _rest_model(backbone):
    stem, stem_out = find_stem(backbone)
    outputs = backbone.outputs
    try:
        rest = keras.Model(stem_out, outputs[0] if len(outputs) == 1 else outputs,
                           name=f"{backbone.name}_after_stem")
    except ValueError as err:
        raise ValueError(
            f"backbone: the graph after {stem.name!r} does not depend on the stem's output alone "
            f"(it reads the input again, e.g. through a skip connection): {err}. {_SUPPORTED}"
        ) from err
    return stem, rest


@keras.saving.register_keras_serializable(package="amp_tf")
class FoldedAnchoredPredictor(AnchoredPredictor):
    """`AnchoredPredictor` with the first convolution folded (same outputs).

    Takes the same arguments as `AnchoredPredictor`; the backbone must start
    with a Conv2D on its input (every `build_backbone` model does: `stem_conv`).
    The per-anchor stem term is recomputed from the anchors and the stem kernel
    in every call (K small convolutions), so changed weights or anchors are
    always used.
    """

    def __init__(self, backbone, anchors=None, **kwargs):
        super().__init__(backbone, anchors, **kwargs)
        if self.anchor_mode != "fixed":
            raise ValueError("anchor_mode: the folded predictor supports fixed anchors only "
                             "(per-image anchors have no per-anchor stem term to share).")
        self.stem, self.rest_model = _rest_model(self.backbone)  # an AnchoredModel gives its backbone

    def stem_outputs(self, images):
        """The stem conv's output for every (anchor, image) pair: (K*B, H', W', F).

        The two small convolutions run in float32 (where the anchors and the
        kernel live); the K*B sum is formed in the stem's compute dtype.
        """
        stem = self.stem
        dtype = stem.compute_dtype
        x, a = self.normalised(images)
        w_res, w_delta, bias = (None if w is None else tf.cast(w, tf.float32) for w in split_kernel(stem))
        res = stem.convolution_op(x, w_res)      # (B, h, w, F): once per image
        anc = stem.convolution_op(a, w_delta)    # (K, h, w, F): once per anchor
        if bias is not None:
            anc = anc + bias                     # the bias once, on the K anchor terms
        z = tf.cast(anc, dtype)[:, None] + tf.cast(res, dtype)[None]   # (K, B, h, w, F)
        z = tf.reshape(z, tf.concat([[-1], tf.shape(z)[2:]], 0))
        if stem.activation is not None:
            z = stem.activation(z)
        return z

    def per_anchor_logits(self, images):
        """Backbone logits for every (anchor, image) pair: (K, B, N), stem folded."""
        b = tf.shape(images)[0]
        logits = self._run_rest(self.stem_outputs(images))
        return tf.reshape(logits, [self.num_anchors, b, -1])

    def _run_rest(self, rows):
        return self.run_chunked(self.rest_model, rows)
