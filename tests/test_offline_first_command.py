"""The first command without data or network: trainers.cifar answers at once with the command that works
offline, --download without a network fails in seconds and leaves nothing behind, and every trainer
says its distribution strategy, replicas and per-replica batch at start."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amp_tf import data
from amp_tf import network
from amp_tf.cli import cifar, common, fmnist
from amp_tf.data import tfds_sets
from amp_tf.run.distribute import describe_strategy, get_strategy

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path):
    """No CIFAR anywhere: an empty home and tfds data dir."""
    env = dict(os.environ, HOME=str(tmp_path / "home"), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_cifar_without_data_answers_before_tensorflow_with_the_offline_command(tmp_path):
    cmd = ["-m", "trainers.cifar", "--strategy", "mirrored", "--out", str(tmp_path / "r")]
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=_env(tmp_path), cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cifar10 is not on this machine"), err
    assert cifar.OFFLINE_COMMAND in err and "--data-dir DIR" in err and "cifar-10-binary.tar.gz" in err
    assert str(tmp_path / "tfds" / "downloads" / "manual") in err  # where the archive goes, without a network
    assert not (tmp_path / "tfds").exists() and not (tmp_path / "r").exists()
    imports = subprocess.run([sys.executable, "-X", "importtime", *cmd], capture_output=True, text=True,
                             env=_env(tmp_path), cwd=ROOT, timeout=120).stderr
    assert "| amp_tf.cli.cifar" in imports and "| tensorflow" not in imports  # answered before TensorFlow


def test_cifar_data_check_passes_a_prepared_copy_and_the_flags_that_need_none(tmp_path):
    base = ["--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    args = cifar.parser().parse_args(base + ["--dataset", "cifar100"])
    (tmp_path / "other").mkdir()  # a non-empty folder without cifar100
    with pytest.raises(FileNotFoundError, match=f"no prepared tensorflow-datasets copy in {tmp_path}"):
        cifar.check_id_data(args)
    prepared = tmp_path / "cifar100" / "3.0.2"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    cifar.check_id_data(args)  # there: the loader takes over
    for flags in (["--download"], ["--dry-run"]):
        cifar.check_id_data(cifar.parser().parse_args(base + ["--dataset", "cifar10", *flags]))
    # the offline command it names is a real command of this repository
    fmnist.parser().parse_args(cifar.OFFLINE_COMMAND.split()[3:])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_answers_within_its_timeout():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert network.reachable([("127.0.0.1", server.getsockname()[1])], timeout=5)
    assert not network.reachable([("127.0.0.1", _free_port()), ("name.invalid", 443)], timeout=5)
    assert not network.reachable([])


def test_cifar_download_without_network_answers_before_tensorflow(tmp_path):
    """A closed local port as the proxy: no download can connect, the trainer says so at once."""
    env = dict(_env(tmp_path), https_proxy=f"127.0.0.1:{_free_port()}", HTTPS_PROXY="")
    cmd = ["-X", "importtime", "-m", "trainers.cifar", "--download", "--out", str(tmp_path / "r")]
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(err) == 1 and err[0].startswith("error: --download: no connection to 127.0.0.1:"), err
    assert "nothing was downloaded or written" in err[0] and cifar.OFFLINE_COMMAND in err[0]
    assert "| tensorflow" not in proc.stderr  # answered before TensorFlow
    assert not (tmp_path / "tfds").exists() and not (tmp_path / "home" / "tensorflow_datasets").exists()


def test_download_without_network_fails_fast_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_sets, "reachable", lambda hosts, timeout=0: False)
    target = tmp_path / "new_tfds"
    with pytest.raises(data.DataNotFoundError, match=r"no connection to www\.cs\.toronto\.edu:443") as info:
        data.load("cifar10", data_dir=str(target), download=True)
    assert "nothing was downloaded or written" in str(info.value)
    assert "cifar-10-binary.tar.gz" in str(info.value) and str(target / "downloads" / "manual") in str(info.value)
    assert not target.exists()
    # the archive already in the manual folder: no probe (tensorflow-datasets reads it without the network)
    manual = tmp_path / "m"
    manual.mkdir()
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"")
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=str(target))
    request = data.LoadRequest("cifar10", data_dir=str(target), download=True, manual_dir=str(manual))
    tfds_sets._check_network(builder, "cifar10", request)


def test_a_failed_download_removes_only_what_it_created(tmp_path):
    root = tmp_path / "tfds"
    (root / "downloads" / "manual").mkdir(parents=True)
    (root / "downloads" / "manual" / "user_file.tar").write_text("x")
    (root / "mnist").mkdir()
    with pytest.raises(RuntimeError):
        with tfds_sets._removed_on_failure(root, ("downloads", "cifar10")):
            (root / "downloads" / "extracted").mkdir()
            (root / "downloads" / "part.tmp").write_text("x")
            (root / "cifar10" / "3.0.2.incomplete").mkdir(parents=True)
            raise RuntimeError("network dropped")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "downloads", "downloads/manual", "downloads/manual/user_file.tar", "mnist"]
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        with tfds_sets._removed_on_failure(fresh, ("downloads",)):
            (fresh / "downloads").mkdir(parents=True)
            raise KeyboardInterrupt
    assert not fresh.exists()
    with tfds_sets._removed_on_failure(fresh, ("downloads",)):  # success: everything stays
        (fresh / "cifar10").mkdir(parents=True)
    assert (fresh / "cifar10").is_dir()


def test_trainers_log_strategy_replicas_and_per_replica_batch(capsys):
    args = common.parse_cli(fmnist.parser(), ["--strategy", "mirrored", "--batch-size", "96"], "train",
                            "trainers.fmnist")
    line = capsys.readouterr().out.strip().splitlines()[0]
    n = get_strategy("mirrored").num_replicas_in_sync  # conftest splits the CPU: 2
    assert get_strategy("mirrored") is get_strategy("mirrored")  # training reuses the logged strategy
    assert line.startswith(f"[fmnist] strategy mirrored: {n} replica"), line
    assert line.endswith(f"global batch 96 = {96 // n} per replica"), line
    assert args.strategy == "mirrored"
    common.parse_cli(cifar.parser(), ["--batch-size", "7", "--download"], "train", "trainers.cifar")
    assert capsys.readouterr().out.strip() == (
        "[cifar] strategy default: 1 replica (the default device), global batch 7 = 7 per replica")


def test_describe_strategy_uneven_batch():
    class Two:
        num_replicas_in_sync = 2

        class extended:
            worker_devices = ("/job:localhost/replica:0/task:0/device:CPU:0",
                              "/job:localhost/replica:0/task:0/device:CPU:1")

    assert describe_strategy(Two(), "mirrored", 5) == (
        "strategy mirrored: 2 replicas (CPU:0, CPU:1), global batch 5 = 2 or 3 (it does not divide evenly) "
        "per replica")
