"""amp-tf: out-of-distribution detection with neural network anchoring (AMP).

Importing the package registers its Keras serializables, so `.keras` files
saved by amp-tf load with `keras.models.load_model` after `import amp_tf`.

One exception keeps the command-line tools quick to answer a typo: when the
process *is* one of our CLIs (``python -m trainers.<x>`` / ``python -m eval.<x>``,
or an ``amp-*`` console script), this file imports nothing heavy; a public
name or submodule is then loaded on first access, from the one module that
defines it (PEP 562 ``__getattr__``), and the CLI registers every serializable
(`amp_tf.serializables.register_all`) right after its arguments are parsed and
checked, so a bad flag is refused before TensorFlow is imported
(docs/architecture.md, "CLIs parse first"). In every other process (a user's
script, a notebook, pytest) `import amp_tf` imports and registers everything, eagerly.

Example:

>>> import amp_tf
>>> from amp_tf import AnchoredModel, AnchoredPredictor, build_backbone, select_anchors

The package is the top layer: it imports everything, so no module inside it
imports the package (tests/test_import_graph.py); code inside that loads a saved
model calls `amp_tf.serializables.register_all` instead of `import_all`.
"""

import importlib as _importlib
import os as _os
import sys as _sys

from amp_tf._version import __version__

#: Public name -> the module that defines it (imported by `import_all`).
_PUBLIC = {
    "AnchoredModel": "amp_tf.anchoring", "anchored_model": "amp_tf.anchoring",
    "ConsistencyAugment": "amp_tf.augment",
    "OODMetricsCallback": "amp_tf.callbacks", "ServingHead": "amp_tf.export",
    "export_for_serving": "amp_tf.export", "anchor_backbone": "amp_tf.models",
    "build_backbone": "amp_tf.models", "AnchoredPredictor": "amp_tf.predictor",
    "select_anchors": "amp_tf.predictor", "finetune_anchored": "amp_tf.training",
}
#: Submodules imported by `import_all`: `amp_tf.metrics`, `amp_tf.scores`, and `amp_tf.baselines`,
#: whose import registers the baselines in `amp_tf.scores` (where they are defined). `import_all`
#: also runs `amp_tf.serializables.register_all` (every module that defines a Keras serializable:
#: optimizers, layers, models; `amp_tf.folded` and `amp_tf.optimizers` among them), so
#: `keras.saving.load_model` works in a user's script after `import amp_tf` (tests/test_load_anywhere.py).
_SUBMODULES = ("amp_tf.metrics", "amp_tf.scores", "amp_tf.baselines")

#: The CLIs' console scripts (setup.py) and the packages of the `python -m` shells.
CLI_SCRIPTS = ("amp-fmnist", "amp-cifar", "amp-imagenet", "amp-tune", "amp-eval-ood", "amp-resize-study")
CLI_PACKAGES = ("trainers.", "eval.")

__all__ = sorted([*_PUBLIC, "metrics", "scores"])


def running_as_cli():
    """True when this process was started as one of amp-tf's command-line tools.

    Example:
        >>> running_as_cli()  # a doctest or a user's script is no CLI
        False
    """
    main = _sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and str(spec.name).startswith(CLI_PACKAGES):
        return True
    return bool(_sys.argv) and _os.path.basename(str(_sys.argv[0])) in CLI_SCRIPTS


def import_all():
    """Imports every public name and every Keras serializable (what `import amp_tf` does
    outside a CLI); idempotent, and cheap once done.

    Example:
        >>> import amp_tf
        >>> amp_tf.import_all()
        >>> "CoupledSGD" in str(amp_tf.optimizers.CoupledSGD)
        True
    """
    for name in _SUBMODULES:
        _importlib.import_module(name)
    _importlib.import_module("amp_tf.serializables").register_all()
    g = globals()
    for name, module in _PUBLIC.items():
        g[name] = getattr(_importlib.import_module(module), name)


def __getattr__(name):  # PEP 562: only reached for names not yet imported (CLI processes)
    # The one module that defines `name`, never `import_all`: `from amp_tf import scores` inside
    # a module being imported lands here, and importing everything then would import that
    # half-initialised module again (a circular ImportError).
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    elif name in ("metrics", "scores", "folded", "optimizers"):
        value = _importlib.import_module(f"amp_tf.{name}")
    else:
        raise AttributeError(f"module 'amp_tf' has no attribute {name!r}")
    globals()[name] = value
    return value


if not running_as_cli():
    import_all()
