"""The command-line layer of amp-tf: argparse helpers, error handling, presets, and the commands.

Each command is a module with `parser()` and `main(argv=None)`; `trainers/*.py`
and `eval/*.py` are thin shells over them (`python -m trainers.fmnist`), and
`setup.py` installs console entry points (`amp-fmnist`, `amp-cifar`, ...).
Every command parses and checks its flags before TensorFlow is imported
(`common.parse_cli`; docs/architecture.md, "CLIs parse first"), so a bad flag
is answered in well under a second.

| command                | module                       | what it does                                   |
|------------------------|------------------------------|------------------------------------------------|
| `trainers.fmnist`      | `amp_tf.cli.fmnist`          | the offline main job (`amp_tf.run.pipeline.run_job`) |
| `trainers.cifar`       | `amp_tf.cli.cifar`           | CIFAR-10/100 with the paper's recipe           |
| `trainers.imagenet`    | `amp_tf.cli.imagenet`        | ImageNet (streaming) or image folders          |
| `trainers.tune`        | `amp_tf.cli.tune`            | keras-tuner on ID-only objectives              |
| `eval.ood`             | `amp_tf.cli.ood`             | score a saved model on ID and OOD sets         |
| `eval.resize_study`    | `amp_tf.cli.resize_study`    | the paper's Table 7 (resize methods)           |
"""
