"""The training recipe: the library's defaults, defined once (no TensorFlow).

`amp_tf.run.training.TrainConfig`, `amp_tf.method.anchoring.AnchoredModel`,
`finetune_anchored` (which builds a `TrainConfig`), the Fashion-MNIST preset
(`amp_tf.run.presets.FMNIST_RECIPE`) and the command-line defaults
(`amp_tf.cli.common.base_parser`) all read their defaults from here, so a
Python user gets the model the CLI user gets with the same settings.

The recipe is the one the protocol selected on validation data (BENCHMARKS.md):

* SGD, lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, crop + flip;
* the lr schedule: a linear warm-up of min(1, epochs / 10) epochs into a cosine decay
  (`amp_tf.config.warmup_epochs`; `TrainConfig(warmup_epochs=None)`, the default, and the
  CLI both use it; ``warmup_epochs=0`` gives a constant lr, ``lr_milestones`` steps);
* **coupled** weight decay (the paper's PyTorch SGD: ``g += wd * w`` before the
  momentum; `amp_tf.run.optimizers.make_sgd`), chosen over Keras' decoupled decay
  with ``benchmarks.quality.ood --select-grid``;
* the anchor transform ``T`` = ``"all"`` on every 5th training step, with
  **per-sample** draws (each anchor its own draw), chosen over the official T
  (one draw per batch) with ``benchmarks.quality.finetune_select`` (3 seeds);
* fine-tuning a converged model: `FINETUNE_CONVERGED` (12 epochs at lr 0.01).

The old recipe stays one argument away: ``weight_decay_mode="decoupled"``
(``--weight-decay-mode decoupled``), and ``consistency_mode="official"``. The
paper presets (`amp_tf.run.presets.CIFAR_RECIPE`, ``IMAGENET_RECIPE``) reproduce
the paper and keep their own explicit values (official T).

Example:

>>> from amp_tf import recipe
>>> recipe.WEIGHT_DECAY_MODE, recipe.CONSISTENCY_MODE
('coupled', 'per_sample')
>>> recipe.as_dict()["consistency_every"]
5
"""

from __future__ import annotations

LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
#: "coupled": PyTorch SGD (g += wd*w before momentum); "decoupled": Keras SGD (w -= lr*wd*w), the old default.
WEIGHT_DECAY_MODE = "coupled"
BATCH_SIZE = 128
AUGMENT = "crop_flip"
CONSISTENCY = "all"
CONSISTENCY_EVERY = 5
#: "per_sample": each anchor its own draw of T; "official": one draw per batch, the authors' ranges.
CONSISTENCY_MODE = "per_sample"

#: K: anchors per image at inference (paper Sec. 3.1); AMP needs at least `MIN_ANCHORS` (tau is a std).
NUM_ANCHORS = 5
MIN_ANCHORS = 2


def check_num_anchors(k, what="num_anchors"):
    """`int(k)`, or a ValueError when AMP cannot use it (K >= `MIN_ANCHORS`: tau is a standard deviation over
    the anchors; an integer). The one home of this check: the library, the CLIs and the benchmarks call it.

    >>> check_num_anchors(5)
    5
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or int(k) != k or int(k) < MIN_ANCHORS:
        raise ValueError(f"{what}: AMP needs K >= {MIN_ANCHORS} anchors (tau is a standard deviation over "
                         f"anchors), a whole number; got {k!r}.")
    return int(k)

#: The shipped detector (`amp_tf.detection.detectors.select_detector`): selected among its candidates on ID validation
#: images and validation OOD sets (`validation_ood_sets` of `SELECT_VAL_OOD` validation images); the
#: feature scores fitted on `SELECT_FIT_LIMIT` training images; AMP's weight in `amp+<feature>` from
#: `SELECT_WEIGHTS`; the weights of AMP, Mahalanobis and Gram in `amp+mahalanobis+gram` are every triple of
#: positive multiples of 1 / `SELECT_SIMPLEX_STEPS` summing to 1 (21 triples); the threshold lets
#: `SERVING_TPR` of the ID validation images pass.
SELECT_FIT_LIMIT = 10_000
SELECT_VAL_OOD = 1000
SELECT_WEIGHTS = (0.25, 0.5, 0.75)
SELECT_SIMPLEX_STEPS = 8
SERVING_TPR = 0.95

#: Anchored fine-tuning of a *converged* classifier (e.g. your own trained model): 12 epochs at lr 0.01,
#: chosen on validation on a 94 % Fashion-MNIST ResNet (``benchmarks.quality.converged_pilot finetune``,
#: BENCHMARKS.md section 1; the pilot: benchmarks/results/history.md). The main job's 2 epochs at lr 0.1 suit
#: its short-trained vanilla twin but cost a converged model 2.2 points of accuracy. Use: ``finetune_anchored(model, x, y, **FINETUNE_CONVERGED)``.
FINETUNE_CONVERGED = dict(epochs=12, lr=0.01)


def as_dict():
    """The recipe as ``{TrainConfig field / CLI dest: value}`` (a new dict each call)."""
    return dict(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, weight_decay_mode=WEIGHT_DECAY_MODE,
                batch_size=BATCH_SIZE, augment=AUGMENT, consistency=CONSISTENCY,
                consistency_every=CONSISTENCY_EVERY, consistency_mode=CONSISTENCY_MODE)
