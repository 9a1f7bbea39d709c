"""One worker of a 2-worker MultiWorkerMirroredStrategy run (started by tests/test_distributed.py).

Usage: TF_CONFIG=... python multiworker_worker.py OUT_DIR
Trains a tiny anchored resnet_small on seeded random data with amp_tf.run.training.train
and writes the final backbone weights to OUT_DIR/weights_<index>.npz.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from amp_tf.run.training import TrainConfig, train  # noqa: E402


def main(out):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    rng = np.random.default_rng(0)  # same data on every worker; each reads its shard
    x = rng.integers(0, 256, (64, 28, 28, 1)).astype("uint8")  # raw pixels
    y = rng.integers(0, 10, 64)
    cfg = TrainConfig(arch="resnet_small", backbone_kwargs={"width": 4}, epochs=2, batch_size=16,
                      lr=0.05, strategy="multiworker", consistency_every=2)
    model, history = train(cfg, x, y, 10, out_dir=os.path.join(out, "run"), verbose=0)
    np.savez(os.path.join(out, f"weights_{index}.npz"), *model.backbone.get_weights())
    print(json.dumps({"index": index, "loss": history.history["loss"]}))


if __name__ == "__main__":
    main(sys.argv[1])
