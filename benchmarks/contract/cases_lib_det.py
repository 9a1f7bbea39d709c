"""Library cases, group ``det``: amp_tf.detectors (get, fit, score, select_detector, load_detector, save)
and OODMetricsCallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.contract import libkit as K
from benchmarks.contract.spec import lib

G = "detectors.get"


def _det():
    from amp_tf import detectors

    return detectors


def _xy(n=256):
    x, y = K.images()
    return x[:n], y[:n]


@lib("det", G, "an unknown name 'knnn'", names=("knnn",))
def det_unknown(ctx):
    return _det().get("knnn")


@lib("det", G, "'KNN' (upper case)", expect="either", names=("KNN",))
def det_upper(ctx):
    return K.ok(True, f"got {type(_det().get('KNN')).__name__}")


@lib("det", G, "knn with k=0", names=("k",))
def det_knn_k0(ctx):
    return _det().get("knn", k=0).fit(K.run(ctx["run"]).vanilla, id_train=_xy()).score(_xy(16)[0])


@lib("det", G, "react with percentile=150", names=("percentile",))
def det_react_pct(ctx):
    return _det().get("react", percentile=150).fit(K.run(ctx["run"]).vanilla, id_train=_xy()).score(_xy(16)[0])


@lib("det", G, "an option that does not exist (knn, neighbours=5)", names=("neighbours",))
def det_bad_option(ctx):
    return _det().get("knn", neighbours=5).fit(K.run(ctx["run"]).vanilla, id_train=_xy()).score(_xy(16)[0])


@lib("det", "Detector.score", "score before fit", names=("fit",))
def det_score_unfitted(ctx):
    return _det().get("knn").score(_xy(16)[0])


@lib("det", "Detector.fit", "mahalanobis on a vanilla model without id_train", names=("id_train",))
def det_maha_no_train(ctx):
    return _det().get("mahalanobis").fit(K.run(ctx["run"]).vanilla).score(_xy(16)[0])


@lib("det", "Detector.fit", "mahalanobis with id_train images but no labels", names=("label",))
def det_maha_no_labels(ctx):
    return _det().get("mahalanobis").fit(K.run(ctx["run"]).vanilla, id_train=_xy()[0]).score(_xy(16)[0])


@lib("det", "Detector.score", "knn fitted on raw pixels, scoring `x / 255`", names=("x / 255",))
def det_score_x255(ctx):
    d = _det().get("knn").fit(K.run(ctx["run"]).vanilla, id_train=_xy())
    return d.score(_xy(16)[0] / 255.0)


@lib("det", "Detector.fit", "energy on a vanilla model that ends in softmax", names=("softmax",))
def det_softmax_model(ctx):
    s = _det().get("energy").fit(K.conv(head="softmax")).score(_xy(16)[0])
    return f"scored: energy {np.round(s[:3], 3).tolist()} (from probabilities)"


@lib("det", "Detector.fit", "mahalanobis on a user's model (no layer named 'features')", names=("features",))
def det_classes(ctx):
    s = _det().get("mahalanobis").fit(K.conv(classes=5), id_train=_xy()).score(_xy(16)[0])
    return f"scored {len(s)}"


@lib("det", "detectors.names", "names(anchored=True) lists what eval.ood scores on an anchored model", expect="ok")
def det_names(ctx):
    got = set(_det().names(anchored=True))
    need = {"amp", "knn", "mahalanobis", "amp+knn", "amp+mahalanobis"}
    return K.ok(need <= got, f"{sorted(got)}")


S = "detectors.select_detector"


def _select(ctx, **kw):
    r = K.run(ctx["run"])
    x, y = K.images()
    kw.setdefault("id_train", (x[:200], y[:200]))
    kw.setdefault("id_val", (x[200:260], y[200:260]))
    return _det().select_detector(kw.pop("model", r.anchored), fit_limit=200, **kw)


@lib("det", S, "a vanilla model", names=("AnchoredModel",))
def sel_vanilla(ctx):
    return _select(ctx, model=K.run(ctx["run"]).vanilla)


@lib("det", S, "id_train as `x / 255`", names=("id_train", "x / 255"))
def sel_x255(ctx):
    x, y = K.images()
    return _select(ctx, id_train=(x[:200] / 255.0, y[:200]))


@lib("det", S, "num_anchors=1", names=("anchors|k",))
def sel_k1(ctx):
    return _select(ctx, num_anchors=1)


@lib("det", S, "tpr=1.5", names=("tpr",))
def sel_tpr(ctx):
    return _select(ctx, tpr=1.5)


@lib("det", S, "val_ood images of another size (32x32)", names=("val_ood|32",))
def sel_ood_shape(ctx):
    return _select(ctx, val_ood={"big": np.zeros((30, 32, 32, 1), np.uint8)})


@lib("det", S, "id_train of 3 images (fewer than the 5 anchors)", names=("anchors|3",))
def sel_few_train(ctx):
    x, y = K.images()
    return _select(ctx, id_train=(x[:3], y[:3]))


@lib("det", S, "weights=[] (no AMP weight to try)", expect="either", names=("weights",))
def sel_no_weights(ctx):
    return _select(ctx, weights=[])


@lib("det", S, "id_val labels only as a list of images (no tuple)", expect="either", names=("id_val",))
def sel_val_list(ctx):
    x, _ = K.images()
    d = _select(ctx, id_val=x[200:260])
    return K.ok(True, f"selected {d.label}")


D = "detectors.load_detector"


@lib("det", D, "a folder without a saved detector", names=("detector.json|no saved detector",))
def load_none(ctx):
    return _det().load_detector(ctx["img_gray28"])


@lib("det", D, "a run's detector for a model of another image shape (a 32x32 RGB anchored model)",
     names=("32|28|shape|anchors",))
def load_other_model(ctx):
    from amp_tf import anchored_model

    return _det().load_detector(ctx["run"], anchored_model(K.conv((32, 32, 3))))


@lib("det", "ShippedDetector.save", "into a path that is a file", names=("notes.txt",))
def det_save_file(ctx):
    return K.run(ctx["run"]).detector.save(Path(ctx["img_notes"]))


O = "OODMetricsCallback"


def _cb(**kw):
    from amp_tf import OODMetricsCallback

    x = K.images()[0]
    return OODMetricsCallback(kw.pop("id_images", x[:64]), kw.pop("ood_sets", {"blur": x[64:128]}), **kw)


@lib("det", O, "ood_sets as a list of arrays (not a dict)", names=("ood_sets",))
def cb_list(ctx):
    return _cb(ood_sets=[K.images()[0][64:128]])


@lib("det", O, "ood_sets={} (no OOD set)", names=("ood_sets",))
def cb_empty(ctx):
    return _cb(ood_sets={})


@lib("det", O, "an OOD set as `x / 255`", names=("x / 255",))
def cb_x255(ctx):
    return _cb(ood_sets={"blur": K.images()[0][64:128] / 255.0})


@lib("det", O, "every=0", names=("every",))
def cb_every0(ctx):
    return _cb(every=0)


@lib("det", O, "positive='in'", names=("positive",))
def cb_positive(ctx):
    return _cb(positive="in")


@lib("det", O, "empty id_images", names=("id_images", "empty"))
def cb_id_empty(ctx):
    return _cb(id_images=np.zeros((0, 28, 28, 1), np.uint8))


@lib("det", O, "batch_size=0 (in fit of an anchored model)", names=("batch_size",),
     check=lambda ctx, r: ("late", "accepted at construction, refused only in fit") if r.get("raised") and not
     r.get("foreign") and "m.fit(" in str(r.get("trace")) else None,
     note="the check called every refusal naming batch_size late; it now looks whether fit raised it (the trace)")
def cb_batch0(ctx):
    cb = _cb(batch_size=0)
    import keras

    from amp_tf import AnchoredModel, build_backbone
    from amp_tf.data import channel_stats

    x, y = K.images()
    mean, std = channel_stats(x[:128])
    m = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=mean, std=std)
    m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    h = m.fit(x[:128], y[:128], epochs=1, verbose=0, callbacks=[cb])
    return f"trained; history keys {sorted(h.history)}"


@lib("det", O, "used in fit() of a vanilla (not anchored) model", expect="either", names=("anchored|AnchoredModel",))
def cb_vanilla_fit(ctx):
    import keras

    m = K.conv()
    m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = K.images()
    h = m.fit(x[:128], y[:128], epochs=1, verbose=0, callbacks=[_cb()])
    keys = sorted(h.history)
    return K.ok(any(k.startswith("val_ood_") for k in keys), f"history keys {keys}")
