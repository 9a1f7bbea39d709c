"""What `AnchoredModel` trains on: class ids as labels, a loss that reads logits.

* `label_problem(y, num_classes, what, sparse)`: why `y` are no labels the model can train on (text,
  fractions, ids out of range, one-hot rows under a sparse loss), or None: the one check of the
  labels before any step (`AnchoredModel.check_inputs`, `finetune_anchored`), its messages also
  those of the in-graph checks (`LABELS_FRACTIONAL`, `labels_out_of_range`).
* `logits_loss(loss)`: the loss to compile, read for a model that outputs logits: the Keras names
  ``"sparse_categorical_crossentropy"`` / ``"categorical_crossentropy"`` (and their functions) become
  the losses with ``from_logits=True``; a cross-entropy built with ``from_logits=False`` is refused
  (it would read the logits as probabilities and train worse, without a word).

Example:
    >>> label_problem(np.eye(3)[[0, 2]], 3, sparse=True)  # doctest: +ELLIPSIS
    'y: one-hot labels of shape (2, 3); the model trains on class ids (...): pass y.argmax(-1), ...'
"""
from __future__ import annotations

import numpy as np

LABELS_FRACTIONAL = ("y: labels must be whole-number class ids; got non-integer values. "
                     "Pass integer labels.")


def labels_out_of_range(num_classes):
    """The first line for labels outside `[0, num_classes)` (numpy and in-graph alike)."""
    return (f"y: labels must be class ids in [0, {num_classes}); got values outside it. "
            "Check the labels or num_classes (the width of the backbone output).")


def one_hot_shape(shape):
    """Whether labels of `shape` are rows (one-hot or soft labels, `(N, C)` with C > 1), not class ids."""
    return len(shape) >= 2 and shape[-1] is not None and shape[-1] > 1


def one_hot_message(shape, what="y", compiled=True):
    """One-hot rows given where the loss takes class ids (`compiled`: the user chose the loss, so a
    one-hot loss is the other fix)."""
    other = (", or compile with keras.losses.CategoricalCrossentropy(from_logits=True), which takes one-hot "
             "rows" if compiled else "")
    return (f"{what}: one-hot labels of shape {tuple(shape)}; the model trains on class ids (sparse "
            f"cross-entropy): pass {what}.argmax(-1){other}.")


def label_problem(y, num_classes=None, what="y", sparse=False, compiled=True):
    """Why `y` are not class ids in `[0, num_classes)`, or None. One-hot / soft rows pass unless
    `sparse` (the loss takes class ids); text labels never pass.

    Example:

    >>> label_problem(np.array([0, 3.7]), 10)
    'y: labels must be whole-number class ids; got non-integer values (e.g. 3.7). Pass integer labels.'
    """
    arr = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    if arr.size == 0:
        return None
    first = arr.flat[0]
    if arr.dtype.kind in "USO" and (arr.dtype.kind != "O" or isinstance(first, (str, bytes))):
        first = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        return (f"{what}: labels must be integer class ids (0 .. classes - 1); got text labels (e.g. {first!r}). "
                f"Map them to ids first, e.g. names, {what} = np.unique({what}, return_inverse=True).")
    if arr.dtype.kind in "fiub" and one_hot_shape(arr.shape):
        return one_hot_message(arr.shape, what, compiled) if sparse else None
    if arr.dtype.kind not in "fiu":
        return None
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            return LABELS_FRACTIONAL.replace("y:", f"{what}:", 1).replace(
                "values.", f"values (e.g. {float(arr[bad].flat[0]):g}).")
    lo, hi = arr.min(), arr.max()
    if num_classes is not None and (lo < 0 or hi >= num_classes):
        return labels_out_of_range(num_classes).replace("y:", f"{what}:", 1).replace(
            "values outside it", f"values in [{lo:g}, {hi:g}]")
    return None


def logits_loss(loss):
    """`loss` for a model that outputs logits: the Keras cross-entropy names (strings or functions)
    become their ``from_logits=True`` losses; a cross-entropy made with ``from_logits=False`` is refused
    naming the fix; anything else is returned as given."""
    import keras

    by_name = {"sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
               "categorical_crossentropy": keras.losses.CategoricalCrossentropy}
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", None) if callable(loss) else None
    if name in by_name and (isinstance(loss, str) or loss is getattr(keras.losses, name, None)):
        return by_name[name](from_logits=True)
    if isinstance(loss, keras.losses.Loss) and getattr(loss, "from_logits", None) is False:
        kind = type(loss).__name__
        named = next((f" (the name {n!r} means that here)" for n, c in by_name.items() if type(loss) is c), "")
        raise ValueError(f"loss: {kind}(from_logits=False) reads the model's outputs as probabilities, but the "
                         f"model outputs logits (AMP and the logit scores need them), so it would train worse "
                         f"without a word. Pass keras.losses.{kind}(from_logits=True){named}.")
    return loss
