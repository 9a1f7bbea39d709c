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
import importlib.abc  # noqa: F401  (the finder below)
import importlib.util  # noqa: F401
import os as _os
import sys as _sys

from amp_tf._version import __version__

#: Public name -> the module that defines it (imported by `import_all`).
_PUBLIC = {
    "AnchoredModel": "amp_tf.method.anchoring", "anchored_model": "amp_tf.method.anchoring",
    "ConsistencyAugment": "amp_tf.method.augment",
    "OODMetricsCallback": "amp_tf.run.callbacks", "ServingHead": "amp_tf.serve.head",
    "export_for_serving": "amp_tf.serve.export", "anchor_backbone": "amp_tf.models",
    "build_backbone": "amp_tf.models", "AnchoredPredictor": "amp_tf.method.predictor",
    "select_anchors": "amp_tf.method.anchors", "finetune_anchored": "amp_tf.run.training",
}
#: Submodules imported by `import_all`: `amp_tf.detection.metrics`, `amp_tf.method.scores`, and `amp_tf.detection.baselines`,
#: whose import registers the baselines in `amp_tf.method.scores` (where they are defined). `import_all`
#: also runs `amp_tf.serializables.register_all` (every module that defines a Keras serializable:
#: optimizers, layers, models; `amp_tf.serve.folded` and `amp_tf.run.optimizers` among them), so
#: `keras.saving.load_model` works in a user's script after `import amp_tf` (tests/test_load_anywhere.py).
_SUBMODULES = ("amp_tf.detection.metrics", "amp_tf.method.scores", "amp_tf.detection.baselines")

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
        >>> "CoupledSGD" in str(amp_tf.run.optimizers.CoupledSGD)
        True
    """
    for name in _SUBMODULES:
        _importlib.import_module(name)
    _importlib.import_module("amp_tf.serializables").register_all()
    g = globals()
    for name, module in _PUBLIC.items():
        g[name] = getattr(_importlib.import_module(module), name)


#: The layers (docs/architecture.md) and the modules that moved into them: `amp_tf.<old>` still imports
#: (README, user code, notebooks), as the same module object as `amp_tf.<layer>.<old>`.
MOVED = {
    "method": ("anchoring", "augment", "predictor", "scores", "inference", "serialization"),
    "models": ("pixels",),
    "detection": ("baselines", "detectors", "metrics", "evaluation"),
    "run": ("pipeline", "scoring", "runfolder", "training", "callbacks", "optimizers", "distribute", "report",
            "plots", "files", "presets", "flags"),
    "serve": ("export", "folded"),
}
_OLD_TO_NEW = {f"amp_tf.{m}": f"amp_tf.{layer}.{m}" for layer, mods in MOVED.items() for m in mods}


class _OldPaths(_importlib.abc.MetaPathFinder, _importlib.abc.Loader):
    """`import amp_tf.export` (and its submodules, `amp_tf.detectors.shipped`) gives the module where it lives
    now (`amp_tf.serve.export`): the old flat paths keep working without a file each."""

    @staticmethod
    def _target(name):
        head = ".".join(name.split(".")[:2])
        return _OLD_TO_NEW[head] + name[len(head):] if head in _OLD_TO_NEW else None

    def find_spec(self, name, path=None, target=None):
        if self._target(name) is None:
            return None
        return _importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return _importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        pass  # the module is the real one, already executed


if not any(isinstance(f, _OldPaths) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _OldPaths())


def __getattr__(name):  # PEP 562: only reached for names not yet imported (CLI processes)
    # The one module that defines `name`, never `import_all`: `from amp_tf import scores` inside
    # a module being imported lands here, and importing everything then would import that
    # half-initialised module again (a circular ImportError).
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    elif f"amp_tf.{name}" in _OLD_TO_NEW or name in MOVED:
        value = _importlib.import_module(_OLD_TO_NEW.get(f"amp_tf.{name}", f"amp_tf.{name}"))
    else:
        raise AttributeError(f"module 'amp_tf' has no attribute {name!r}")
    globals()[name] = value
    return value


if not running_as_cli():
    import_all()
