"""The AMP formula on per-anchor logits (paper Sec. 3.1, Eq. 1-2): tau (`TAU_REDUCTIONS`), the
heteroscedastic temperature scaling (`calibrate`, `CALIBRATIONS`) and every output of one pass
over the anchors (`amp_outputs`); the names of AMP's variants (`AMP_VARIANTS`, `AMP_SCORES`).
`amp_tf.method.predictor.AnchoredPredictor` computes the logits and calls these; every name
still imports from `amp_tf.method.predictor`."""
from __future__ import annotations

import tensorflow as tf

from amp_tf.method import scores


TAU_REDUCTIONS = ("mean", "sum")
CALIBRATIONS = ("exp", "divide")


def amp_variant_name(reduction, calibration):
    """`amp` for the default (mean, exp), else e.g. `amp[sum,divide]`."""
    if (reduction, calibration) == ("mean", "exp"):
        return "amp"
    return f"amp[{reduction},{calibration}]"


#: The AMP variants, defined once: name -> (tau_reduction, calibration).
AMP_VARIANTS = {amp_variant_name(r, c): (r, c)
                for r, c in (("mean", "exp"), ("sum", "exp"), ("mean", "divide"), ("sum", "divide"))}


#: Every score of an anchored model, all from one pass over the anchors (`amp_tf.detection.detectors.AMPDetector`),
#: in the order of the report tables: the variants, MSP and energy of the default calibrated logits,
#: and `neg_tau` (-tau of the default reduction, higher = ID).
AMP_SCORES = ("amp", "msp", "energy", "neg_tau", "amp[mean,divide]", "amp[sum,exp]", "amp[sum,divide]")


def tau_of(logits_kbn, reduction):
    """tau from (K, B, N) logits: std over anchors (ddof=1) of sigmoid, reduced over classes."""
    k = tf.cast(tf.shape(logits_kbn)[0], logits_kbn.dtype)
    p = tf.sigmoid(logits_kbn)
    var = tf.reduce_sum(tf.square(p - tf.reduce_mean(p, axis=0)), axis=0) / (k - 1.0)
    std = tf.sqrt(var)
    return tf.reduce_mean(std, axis=-1) if reduction == "mean" else tf.reduce_sum(std, axis=-1)


def calibrate(logits, tau, calibration="exp", eps=1e-6):
    """Heteroscedastic temperature scaling of mean logits H (B, N) by tau (B,)."""
    if calibration == "exp":
        return logits / (1.0 + tf.exp(tau))[:, None]
    return logits / tf.maximum(tau, eps)[:, None]


def amp_outputs(logits_kbn, tau_reduction="mean", calibration="exp", eps=1e-6):
    """Every AMP output from per-anchor logits (K, B, N). Pure function, graph-safe."""
    logits_kbn = tf.cast(logits_kbn, tf.float32)
    h = tf.reduce_mean(logits_kbn, axis=0)
    tau = tau_of(logits_kbn, tau_reduction)
    hc = calibrate(h, tau, calibration, eps)
    return {
        "logits": h,
        "tau": tau,
        "calibrated_logits": hc,
        "probabilities": tf.nn.softmax(hc, axis=-1),
        "predicted_class": tf.argmax(h, axis=-1, output_type=tf.int32),
        "amp_score": scores.get("amp")(hc),
        "msp": scores.get("msp")(hc),
        "energy": scores.get("energy")(hc),
    }
