"""amp-tf: out-of-distribution detection with neural network anchoring (AMP).

`import amp_tf` is light in every process: it imports no TensorFlow, and a public
name or submodule is loaded on first use, from the one module that defines it
(PEP 562 ``__getattr__``). Keras serializables are registered the moment Keras is
there: if Keras is already imported, at ``import amp_tf``; otherwise as soon as an
import of Keras or TensorFlow completes (a post-import hook, `_Imports` below). So

* a user's script or notebook needs nothing more: after ``import amp_tf``,
  `keras.saving.load_model` finds every class amp-tf saved (``amp_tf>AnchoredModel``,
  its optimizers and layers) whether Keras was imported before or after it;
* a command (``python -m trainers.fmnist --epocs 3``) parses and checks its flags
  before TensorFlow is imported, so a typo is answered at once.

The library does not ask who imported it: what it does depends only on whether
Keras is loaded (docs/architecture.md, "One import, any process").

Example:

>>> import amp_tf
>>> from amp_tf import AnchoredModel, AnchoredPredictor, build_backbone, select_anchors

The package is the top layer: it imports everything, so no module inside it
imports the package (tests/test_import_graph.py); code inside that loads a saved
model calls `amp_tf.serializables.register_all`.
"""

import importlib as _importlib
import importlib.abc  # noqa: F401  (the finder below)
import importlib.util  # noqa: F401
import sys as _sys
import threading as _threading

from amp_tf._version import __version__

#: Public name -> the module that defines it (loaded on first use; all of them by `import_all`).
_PUBLIC = {
    "AnchoredModel": "amp_tf.method.anchoring", "anchored_model": "amp_tf.method.anchoring",
    "ConsistencyAugment": "amp_tf.method.augment",
    "OODMetricsCallback": "amp_tf.run.callbacks", "ServingHead": "amp_tf.serve.head",
    "export_for_serving": "amp_tf.serve.export", "anchor_backbone": "amp_tf.models",
    "build_backbone": "amp_tf.models", "AnchoredPredictor": "amp_tf.method.predictor",
    "select_anchors": "amp_tf.method.anchors", "finetune_anchored": "amp_tf.run.training",
}
#: Submodules imported once Keras is there: `amp_tf.detection.metrics`, `amp_tf.method.scores`, and
#: `amp_tf.detection.baselines`, whose import registers the baselines in `amp_tf.method.scores` (where
#: they are defined); then `amp_tf.serializables.register_all` (every module that defines a Keras
#: serializable: optimizers, layers, models), so `keras.saving.load_model` works after `import amp_tf`
#: (tests/test_load_anywhere.py).
_SUBMODULES = ("amp_tf.detection.metrics", "amp_tf.method.scores", "amp_tf.detection.baselines")

__all__ = sorted([*_PUBLIC, "metrics", "scores"])


def import_all():
    """Imports every public name, registers every Keras serializable and every score (what happens by
    itself once Keras is imported); idempotent, and cheap once done. It imports TensorFlow.

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
#: The imports whose completion may make Keras usable (TensorFlow imports Keras and Keras TensorFlow).
_KERAS = ("keras", "tensorflow")


class _Watched(_importlib.abc.Loader):
    """A module's own loader, plus a note when its module has run (`_Imports.done`)."""

    def __init__(self, loader, imports):
        self._loader, self._imports = loader, imports

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._imports.depth(+1)
        try:
            self._loader.exec_module(module)
        finally:
            self._imports.depth(-1)
        self._imports.done()

    def __getattr__(self, name):  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self._loader, name)


class _Imports(_importlib.abc.MetaPathFinder, _importlib.abc.Loader):
    """The package's one import hook.

    * `import amp_tf.export` (and its submodules, `amp_tf.detectors.shipped`) gives the module where it
      lives now (`amp_tf.serve.export`): the old flat paths keep working without a file each;
    * once Keras and TensorFlow are imported and no import of Keras, TensorFlow or an amp-tf module is
      still running (a half-run module cannot be imported again), `import_all` runs, once: every
      serializable and every score is registered, in whatever order the imports came.
    """

    def __init__(self):
        self._local = _threading.local()
        self._lock = _threading.Lock()
        self.registered = False

    @staticmethod
    def _target(name):
        head = ".".join(name.split(".")[:2])
        return _OLD_TO_NEW[head] + name[len(head):] if head in _OLD_TO_NEW else None

    def find_spec(self, name, path=None, target=None):
        if self._target(name) is not None:
            return _importlib.util.spec_from_loader(name, self)
        if self.registered or not (name in _KERAS or name.startswith("amp_tf.")):
            return None
        spec = self._real_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Watched(spec.loader, self)
        return spec

    def _real_spec(self, name, path, target):
        for finder in _sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def depth(self, step):
        self._local.depth = getattr(self._local, "depth", 0) + step

    def done(self):
        """After a watched import, or at the end of ``import amp_tf``: registers once Keras is usable."""
        if self.registered or getattr(self._local, "depth", 0) or not all(
                getattr(_sys.modules.get(m), "__spec__", None) is not None for m in _KERAS):
            return
        with self._lock:
            if self.registered:
                return
            self.registered = True  # before: import_all's own imports come back here
            try:
                import_all()
            except BaseException:
                self.registered = False
                raise

    # the loader of the old paths
    def create_module(self, spec):
        return _importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        pass  # the module is the real one, already executed


_IMPORTS = next((f for f in _sys.meta_path if type(f).__name__ == "_Imports"), None)
if _IMPORTS is None:
    _IMPORTS = _Imports()
    _sys.meta_path.insert(0, _IMPORTS)


def __getattr__(name):  # PEP 562: only reached for names not yet imported
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


def __dir__():
    return sorted({*globals(), *_PUBLIC, *MOVED, *(m.split(".")[1] for m in _OLD_TO_NEW)})


_IMPORTS.done()  # Keras already imported (a notebook, a test): register now
