"""One contract, checked at every door: each check that a model, a flag combination or a data
folder must pass lives here once, and the library entry points, every CLI, the tuner, eval.ood
and the examples call it (tests/test_bad_inputs.py feeds every door the same bad inputs).

* `check_logits_head` / `head_activation_in_config`: a classifier must output logits; a final
  softmax or sigmoid is refused with the fix (drop the final activation: ``activation=None``).
* `check_arch_width`: only ``resnet_small`` has a width (trainers.cifar, trainers.tune, ...).
* `check_image_shape`: a model's input against the data's images; a model that takes any
  size (``(None, None, C)``) accepts every size with its channel count.
* `check_scores`: the detector names valid for a model kind (eval.ood).
* `check_int`, `check_keywords`, `check_folder_path`, `read_json`: whole numbers in a range,
  keyword names (with the closest valid one), a path of folders, a saved JSON file.
* `fashion_mnist_missing`: what a data folder lacks for Fashion-MNIST (--data-dir is the
  only source when given).

Pure Python at import (no TensorFlow, no Keras): the CLIs call these before TensorFlow is
imported; `check_logits_head` imports Keras only when it is given a live model.

Example:
    >>> check_image_shape((None, None, 1), (28, 28, 1), "the model")
    >>> check_arch_width("wrn40_2", width_given=True)
    Traceback (most recent call last):
    ...
    ValueError: --width: only resnet_small has a --width; wrn40_2 has a fixed width. Drop --width, or use --arch resnet_small.
"""

from __future__ import annotations

from pathlib import Path

#: Final activations that turn logits into something else (AMP, the anchored loss and every
#: logit score need logits).
NOT_LOGITS = ("softmax", "sigmoid", "log_softmax")
#: Backbones with a width flag.
WIDTH_ARCHS = ("resnet_small",)


# --------------------------------------------------------------------------- #
# The output head: logits only
# --------------------------------------------------------------------------- #
def _head_message(what, found):
    return (f"{what}: the model ends in {found}, so it outputs probabilities, not logits; anchored training, "
            "AMP and the logit scores need logits. Drop the final activation: build the last layer with "
            "activation=None (keras.applications: classifier_activation=None) and give the model that "
            "outputs logits.")


def head_activation(model):
    """Where a live Keras model applies a final softmax / sigmoid (a description), or None.

    Follows the single output back through shape-only layers (Flatten, Reshape, Dropout,
    Identity, a linear Activation) and nested models.
    """
    import keras

    shape_only = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Identity, keras.layers.Dropout)
    outputs = getattr(model, "outputs", None) or []
    layer = _producer(outputs[0]) if len(outputs) == 1 else None
    for _ in range(64):
        if layer is None:
            return None
        where = f"layer {layer.name!r} ({type(layer).__name__})"
        if type(layer).__name__ == "Softmax":
            return f"a softmax ({where})"
        act = getattr(getattr(layer, "activation", None), "__name__", "")
        if act in NOT_LOGITS:
            return f"a {act} ({where} has activation={act!r})"
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            layer = _producer(layer.outputs[0])
        elif (isinstance(layer, shape_only) or act == "linear") and len(layer._inbound_nodes) == 1:
            layer = _producer(layer._inbound_nodes[0].input_tensors[0])
        else:
            return None
    return None


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history else None


def check_logits_head(model, what="model"):
    """Refuses a model (live Keras model) whose output is not logits (a final softmax or sigmoid).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid", name="head")])
        >>> check_logits_head(m, "vanilla")
        Traceback (most recent call last):
        ...
        ValueError: vanilla: the model ends in a sigmoid (layer 'head' (Dense) has activation='sigmoid'), ...
    """
    found = head_activation(model)
    if found:
        raise ValueError(_head_message(what, found))
    return model


def head_activation_in_config(config):
    """`head_activation` of a saved model read from its `.keras` config.json (no Keras): a
    Functional / Sequential model whose last layer is a Softmax or has a softmax / sigmoid
    activation. None when it cannot tell (e.g. a subclassed model)."""
    inner = (config or {}).get("config") or {}
    layers = inner.get("layers") or []
    if not layers:
        return None
    last = layers[-1]
    outputs = inner.get("output_layers")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], list):
        by_name = {(layer.get("config") or {}).get("name", layer.get("name")): layer for layer in layers}
        last = by_name.get(outputs[0][0], last)
    name = (last.get("config") or {}).get("name", last.get("name"))
    if last.get("class_name") == "Softmax":
        return f"a softmax (layer {name!r} (Softmax))"
    act = (last.get("config") or {}).get("activation")
    if isinstance(act, dict):
        act = (act.get("config") or {}).get("name") or act.get("class_name")
    if act in NOT_LOGITS:
        return f"a {act} (layer {name!r} ({last.get('class_name')}) has activation={act!r})"
    if last.get("class_name") in ("Functional", "Sequential", "Model"):
        return head_activation_in_config(last)
    return None


def check_logits_config(config, what):
    """`check_logits_head` for a saved model's config.json (the CLIs, before TensorFlow)."""
    found = head_activation_in_config(config)
    if found:
        raise ValueError(_head_message(what, found))


def outputs_in_config(config):
    """The outputs of a saved model read from its `.keras` config.json (no Keras): ``[(layer name,
    units)]`` (units: a Dense layer's, else None), or None when it cannot tell (a subclassed model)."""
    inner = (config or {}).get("config") or {}
    layers = inner.get("layers") or []
    if not layers:
        return None
    by_name = {(layer.get("config") or {}).get("name", layer.get("name")): layer for layer in layers}
    outputs = inner.get("output_layers")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], list):
        names = [o[0] for o in outputs]  # several outputs: [[name, node, tensor], ...]
    else:
        names = [outputs[0]] if isinstance(outputs, list) and outputs else [
            (layers[-1].get("config") or {}).get("name")]
    found = []
    for name in names:
        layer = by_name.get(name) or {}
        units = (layer.get("config") or {}).get("units") if layer.get("class_name") == "Dense" else None
        found.append((name, units))
    return found


def check_outputs(outputs, what, num_classes=None, data_what="the data"):
    """Refuses a classifier with more than one output, or (`num_classes` given) another class count:
    `outputs` is ``[(name, units or None)]`` (`outputs_in_config`, or a live model's outputs)."""
    if outputs is None:
        return
    if len(outputs) != 1:
        raise ValueError(f"{what}: the model has {len(outputs)} outputs ({', '.join(str(n) for n, _ in outputs)}); "
                         "amp-tf needs a classifier with one output of logits (one per class). Give a model "
                         "with a single logits output, e.g. keras.Model(inputs, logits).")
    units = outputs[0][1]
    if num_classes is not None and units is not None and int(units) != int(num_classes):
        raise ValueError(f"{what}: the model has {units} outputs (classes); {data_what} come from {num_classes} "
                         "classes. Give a model trained on this data set.")


# --------------------------------------------------------------------------- #
# Architecture and width; image shapes; score names
# --------------------------------------------------------------------------- #
def check_arch_width(arch, width_given, flag="--width"):
    """Refuses a width for a backbone that has none (only `WIDTH_ARCHS` have one)."""
    if width_given and arch is not None and arch not in WIDTH_ARCHS:
        raise ValueError(f"{flag}: only resnet_small has a --width; {arch} has a fixed width. Drop --width, or "
                         "use --arch resnet_small.")


def shapes_match(model_shape, data_shape):
    """True when images of `data_shape` (H, W, C) fit a model input `model_shape` (None: any size)."""
    model_shape, data_shape = tuple(model_shape), tuple(data_shape)
    return len(model_shape) == len(data_shape) and all(
        m is None or d is None or int(m) == int(d) for m, d in zip(model_shape, data_shape))


def check_image_shape(model_shape, data_shape, what="the model", data_what="the data", fix=None):
    """Refuses a model whose input does not take the data's images (a model taking any size,
    ``(None, None, C)``, takes every size with C channels)."""
    if model_shape is None or data_shape is None or shapes_match(model_shape, data_shape):
        return
    fix = fix or "Give a model trained on such images."
    raise ValueError(f"{what} takes {_fmt(model_shape)} images; {data_what} are {_fmt(data_shape)}. {fix}")


def _fmt(shape):
    return "(" + ", ".join("any" if d is None else str(int(d)) for d in shape) + ")"


def check_scores(asked, valid, kind):
    """The asked score names in `valid`'s order (anchored) or as asked; ValueError naming the
    unknown ones and the valid names for this model kind."""
    bad = [s for s in asked if s not in valid]
    if bad or not asked:
        raise ValueError(f"--scores: unknown score(s) {', '.join(bad) or '(none given)'} for "
                         f"{'an anchored' if kind == 'anchored' else 'a vanilla'} model; valid: "
                         f"{', '.join(valid)}, or all.")
    return list(dict.fromkeys(asked))


# --------------------------------------------------------------------------- #
# Data folders
# --------------------------------------------------------------------------- #
_IDX_PREFIX = {"train": "train", "test": "t10k"}
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _has_idx_pair(folder, prefix):
    for kind, ndim in (("images", 3), ("labels", 1)):
        names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
        if not any((folder / (n + s)).is_file() for n in names for s in (".gz", "")):
            return False
    return True


def fashion_mnist_missing(data_dir, split):
    """Why Fashion-MNIST's `split` is not in the data folder `data_dir` (the files it needs and what is
    there), or None when its IDX files or a tensorflow-datasets copy are there."""
    base = Path(data_dir).expanduser()
    prefix = _IDX_PREFIX[split]
    if any(_has_idx_pair(f, prefix) for f in (base, base / "fashion-mnist", base / "fashion_mnist")):
        return None
    if (base / "fashion_mnist").is_dir():
        return None  # a tensorflow-datasets copy: its loader tells what is missing in it
    try:
        present = sorted(p.name for p in base.iterdir())
    except OSError:
        present = []
    have = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
    return (f"data_dir (--data-dir) {base}: Fashion-MNIST's {split} split is not there: it needs "
            f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] (in the folder or its "
            "fashion-mnist/ subfolder) or a prepared tensorflow-datasets copy (fashion_mnist/); the folder "
            f"holds {have or 'nothing'}. With a data folder every split is read from it only: add the files, "
            "pass download=True (CLI: --download) to fetch them into it, or drop --data-dir to use the system "
            f"copy ({DEBIAN_FASHION_MNIST_DIR}: `sudo apt-get install dataset-fashion-mnist`).")


def _short_idx_files(data_dir, split):
    """The IDX files of `split` in `data_dir` too short to hold their header (an empty file, a cut copy):
    ``[(path, bytes)]``. Gzip files need 18 bytes, raw IDX files 4 + 4 * ndim."""
    base, prefix, short = Path(data_dir).expanduser(), _IDX_PREFIX[split], []
    for folder in (base, base / "fashion-mnist", base / "fashion_mnist"):
        for kind, ndim in (("images", 3), ("labels", 1)):
            for name in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
                for suffix, least in ((".gz", 18), ("", 4 + 4 * ndim)):
                    f = folder / (name + suffix)
                    if f.is_file() and f.stat().st_size < least:
                        short.append((f, f.stat().st_size))
    return short


def check_fashion_mnist_dir(data_dir, splits=("train", "test")):
    """Refuses, before any work, a data folder that lacks a Fashion-MNIST split, or whose IDX files are
    too short to be read (empty files: their sizes, no TensorFlow) (trainers.fmnist)."""
    for split in splits:
        why = fashion_mnist_missing(data_dir, split)
        if why:
            raise ValueError(why)
        short = _short_idx_files(data_dir, split)
        if short:
            more = f"; {len(short) - 1} more such file(s)" if len(short) > 1 else ""
            raise ValueError(f"data_dir (--data-dir) {Path(data_dir).expanduser()}: {short[0][0]} holds only "
                             f"{short[0][1]} bytes, too short for an IDX file (an empty or cut copy{more}). Replace "
                             "it with the complete Fashion-MNIST file, or pass --download to fetch the files into "
                             "this folder.")


def check_ood_folders(text, flag="--ood"):
    """Every ``folder:<path>`` OOD set of a comma list exists and is a folder: checked before any work (a typo
    in a path is never a set to skip; a folder without images is the loader's to judge: the trainers skip
    it with a message). Pure Python.

    Example:
        >>> check_ood_folders("digits,folder:/no/such/dir")
        Traceback (most recent call last):
        ...
        ValueError: --ood folder:/no/such/dir: no such folder; give a folder of images (folder:<path>).
    """
    for name in (n.strip() for n in str(text).split(",")):
        if not name.startswith("folder:") or "$" in name:
            continue
        folder = Path(name[len("folder:"):]).expanduser()
        if not folder.exists():
            raise ValueError(f"{flag} {name}: no such folder; give a folder of images (folder:<path>).")
        if not folder.is_dir():
            raise ValueError(f"{flag} {name}: {folder} is a file, not a folder of images.")


def check_finite_weights(model, what="model"):
    """Refuses a model whose weights hold NaN or infinity (training from it would spread them silently)."""
    import numpy as np

    bad = [w.path if hasattr(w, "path") else w.name for w in model.weights if not np.all(np.isfinite(np.asarray(w)))]
    if bad:
        raise ValueError(f"{what}: {len(bad)} weight tensor(s) hold NaN or infinity ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); give a model whose training did not diverge.")
    return model


def check_learning_rate(lr, what="lr"):
    """`lr` if it is a finite learning rate > 0, else a ValueError naming it."""
    import math

    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{what}: expected a finite learning rate > 0, got {lr!r}.")
    return lr


# --------------------------------------------------------------------------- #
# Arguments: whole numbers in a range, keyword names; paths; saved JSON files
# --------------------------------------------------------------------------- #
def check_int(value, what, lo=None, hi=None, note=""):
    """`int(value)` for a whole number in ``[lo, hi]`` (a bool, a float such as 1.5, text: refused),
    else a ValueError naming `what` and the range (`note`: what the number means).

    Example:
        >>> check_int(-1, "seed", 0, 2**32 - 1)
        Traceback (most recent call last):
        ...
        ValueError: seed: expected an int in [0, 4294967295], got -1.
    """
    import numbers

    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if whole and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    want = (f"an int in [{lo}, {hi}]" if lo is not None and hi is not None
            else f"an int >= {lo}" if lo is not None else f"an int <= {hi}" if hi is not None else "an int")
    raise ValueError(f"{what}: expected {want}{f' ({note})' if note else ''}, got {value!r}.")


def check_keywords(where, given, valid):
    """Refuses keyword arguments of `where` that are not in `valid`, with the closest valid name
    (difflib) and the list of valid ones.

    Example:
        >>> check_keywords("finetune_anchored", {"learning_rate": 0.01}, ["lr", "seed"])
        Traceback (most recent call last):
        ...
        ValueError: finetune_anchored: unknown keyword learning_rate; did you mean lr? Valid keywords: lr, seed.
    """
    import difflib

    bad = [k for k in given if k not in valid]
    if bad:
        close = difflib.get_close_matches(bad[0], list(valid), n=1, cutoff=0.5)
        initials = "".join(part[:1] for part in bad[0].split("_"))  # learning_rate -> lr
        close = close or [v for v in valid if v == initials or v in bad[0] or bad[0] in v][:1]
        raise ValueError(f"{where}: unknown keyword{'s' if len(bad) > 1 else ''} {', '.join(bad)}"
                         f"{f'; did you mean {close[0]}?' if close else '.'} Valid keywords: "
                         f"{', '.join(sorted(valid))}.")


def check_folder_path(folder, what):
    """The nearest existing folder on the path of `folder` (which may not exist yet); ValueError when
    that is a file (a path that cannot hold folders), naming `what` and the file.

    Example:
        >>> import pathlib, tempfile
        >>> notes = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = notes.write_text("mine")
        >>> check_folder_path(notes / "run", "--out notes.txt/run")
        Traceback (most recent call last):
        ...
        ValueError: --out notes.txt/run: .../notes.txt is a file, not a folder; pass a path made of folders.
    """
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: {existing} is a file, not a folder; pass a path made of folders.")
    return existing


def read_json(path, fix):
    """The object in the JSON file `path`; a ValueError naming the file and `fix` (what to do) when
    it is damaged (not JSON, cut off, not UTF-8)."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: damaged, not a JSON file ({err}); {fix}") from None
