"""tensorflow-datasets entries, all served by one generic loader.

Offline first: before any tfds call that could touch the network, the loader
checks that the prepared dataset is on disk (``builder.is_prepared()`` only looks
at ``data_dir``). If it is not there and ``download`` was not asked for it fails
at once with a message that says how to get the data; ``tfds.load`` itself would
retry for minutes without a network. With ``download`` it first tries the hosts
of the set's files (a socket connect, `PROBE_TIMEOUT_S` seconds) unless those
files already lie in the manual folder (``<data_dir>/downloads/manual``, where
tensorflow-datasets takes them from without the network): no network fails in
seconds, and a download or preparation that fails removes what it created.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil

import numpy as np
import tensorflow as tf

from amp_tf.data import tfdata
from amp_tf.network import PROBE_TIMEOUT_S, hosts_of, reachable
from amp_tf.data.registry import (
    DataNotFoundError,
    ImageSet,
    LoadRequest,
    finish_dataset,
    register,
)

logger = logging.getLogger("amp_tf.data")

#: Plain tfds names in the registry.
TFDS_NAMES = (
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "dtd",
    "places365_small",
    "imagenet2012",
    "mnist",
)

#: ``split="test"`` maps to these tfds splits where a set has no labelled test split.
SPLIT_ALIASES = {
    "lsun": {"test": "validation"},
    "imagenet2012": {"test": "validation"},
    "imagenet2012_corrupted": {"test": "validation"},
    "places365_small": {"test": "validation"},  # its test split is unlabelled
}

#: Approximate download sizes (tfds catalog), shown before/instead of a download.
DOWNLOAD_SIZES = {
    "cifar10": "about 160 MiB",
    "cifar100": "about 160 MiB",
    "svhn_cropped": "about 1.5 GiB",
    "dtd": "about 600 MiB",
    "places365_small": "about 29 GiB",
    "lsun": "several GiB per category",
    "fashion_mnist": "about 30 MiB",
    "mnist": "about 11 MiB",
}

#: Decoded sets up to this size are cached in memory after the first epoch.
CACHE_MAX_BYTES = 2 * 1024**3
#: Shuffle buffer for sets that are not cached.
SHUFFLE_BUFFER = 10_000


def _family(tfds_name: str) -> str:
    return tfds_name.split("/", 1)[0]


def _check_config(tfds_name: str) -> None:
    """Validates the config part of ``family/config`` names against tfds' list."""
    import tensorflow_datasets as tfds

    family, _, config = tfds_name.partition("/")
    if not config:
        return
    configs = [c.name for c in (tfds.builder_cls(family).BUILDER_CONFIGS or [])]
    if config not in configs:
        shown = ", ".join(configs[:40]) + (" ..." if len(configs) > 40 else "")
        raise ValueError(f"unknown {family} variant {config!r} in {tfds_name!r}; use {family}/<one of: {shown}>.")


def _not_prepared_message(builder, tfds_name: str, request: LoadRequest) -> str:
    where = request.data_dir or "the default tfds data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    head = (
        f"{tfds_name!r} is not prepared in {where} (looked for {builder.data_dir}); "
        "download was not requested, so nothing was fetched."
    )
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        manual = request.manual_dir or f"{request.data_dir or '~/tensorflow_datasets'}/downloads/manual"
        return (
            f"{head} It needs manually downloaded ImageNet files: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar (from https://image-net.org/, registration required) in {manual} "
            "(or pass manual_dir=...), then call again with download=True (CLI: --download) to "
            "prepare it from those files; or pass data_dir (CLI: --data-dir) pointing at a tfds data "
            "dir that already holds a prepared copy."
        )
    size = DOWNLOAD_SIZES.get(_family(tfds_name), "size unknown")
    files = _manual_files_hint(builder, request)
    return (
        f"{head} Fix: pass download=True (CLI: --download) to let tensorflow-datasets download "
        f"({size}, from {builder.info.homepage}) and prepare it in that dir, or pass data_dir "
        "(CLI: --data-dir) pointing at a tfds data dir that already holds a prepared copy"
        + (f"; without a network: {files}." if files else ".")
    )


def _urls(builder):
    """``{url: file name}`` of the set's download files (tensorflow-datasets' checksum list), or {}."""
    try:
        return {url: info.filename for url, info in (builder.url_infos or {}).items() if info.filename}
    except Exception:  # no checksum list for this builder
        return {}


def _manual_dir(builder, request):
    return request.manual_dir or os.path.join(str(builder.data_dir_root), "downloads", "manual")


def _manual_files_hint(builder, request):
    """How to prepare the set from its files without the network (tfds takes them from the manual folder)."""
    urls = _urls(builder)
    if not urls:
        return ""
    names = ", ".join(sorted(set(urls.values())))
    return (f"put {names} (from {', '.join(urls)}) in {_manual_dir(builder, request)} and pass download=True "
            "(CLI: --download): tensorflow-datasets prepares the set from them without the network")


def _has_manual_files(builder, request):
    urls = _urls(builder)
    folder = _manual_dir(builder, request)
    return bool(urls) and all(os.path.isfile(os.path.join(folder, n)) for n in urls.values())


def _download_hosts(builder):
    """``[(host, port)]`` a download connects to first: the proxy when one is set, else the files' hosts."""
    return hosts_of(list(_urls(builder)) or [str(builder.info.homepage or "")])


def _check_network(builder, tfds_name, request):
    """Fails in `PROBE_TIMEOUT_S` seconds, writing nothing, when a download cannot reach the files' hosts."""
    if "://" in str(builder.data_dir) or _has_manual_files(builder, request):
        return
    if "mocking" in getattr(builder.download_and_prepare, "__module__", ""):
        return  # tfds.testing.mock_data: its download_and_prepare is a no-op
    hosts = _download_hosts(builder)
    if not hosts or reachable(hosts):
        return
    where = ", ".join(f"{h}:{p}" for h, p in hosts)
    files = _manual_files_hint(builder, request)
    raise DataNotFoundError(
        f"download of {tfds_name!r}: no connection to {where} within {PROBE_TIMEOUT_S:g} s (no network?); "
        f"nothing was downloaded or written. Fix: run where the network is reachable, or pass data_dir "
        "(CLI: --data-dir) pointing at a tfds data dir that already holds a prepared copy"
        + (f", or {files}." if files else ".")
    )


@contextlib.contextmanager
def _removed_on_failure(root, subdirs):
    """Removes what the block created in `root` (and directly in its `subdirs`) when the block fails.

    Entries that were there before are never touched: only this call's own downloads, extractions and
    half-prepared folders go (a retry starts clean; tensorflow-datasets does not resume a file).
    """
    root = str(root)
    if "://" in root:
        yield
        return

    def listing(folder):
        return set(os.listdir(folder)) if os.path.isdir(folder) else None

    before = {d: listing(os.path.join(root, d) if d else root) for d in ("", *subdirs)}
    try:
        yield
    except BaseException:
        for d, had in before.items():
            folder = os.path.join(root, d) if d else root
            if had is None:
                if d == "" or before[""] is not None:  # a folder this call made: all of it
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            for name in (listing(folder) or set()) - had:
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
        raise


def _is_prepared(builder) -> bool:
    """``builder.is_prepared()``, without its log noise for a missing local folder."""
    path = str(builder.data_dir)
    if "://" not in path and not os.path.exists(os.path.join(path, "dataset_info.json")):
        return False
    return builder.is_prepared()


def tfds_builder(tfds_name: str, request: LoadRequest):
    """Returns the tfds builder, prepared; never touches the network unless asked.

    Raises:
        DataNotFoundError: Not prepared and ``request.download`` is False, or a
            download that cannot reach the hosts of the set's files.
    """
    import tensorflow_datasets as tfds

    _check_config(tfds_name)
    builder = tfds.builder(tfds_name, data_dir=request.data_dir)
    if not _is_prepared(builder):
        if not request.download:
            raise DataNotFoundError(_not_prepared_message(builder, tfds_name, request))
        _check_network(builder, tfds_name, request)
        size = DOWNLOAD_SIZES.get(_family(tfds_name), "size unknown")
        logger.warning(
            "downloading and preparing %s (%s, from %s) into %s; this needs network access",
            tfds_name, size, builder.info.homepage, builder.data_dir,
        )
        config = tfds.download.DownloadConfig(manual_dir=request.manual_dir)
        with _removed_on_failure(builder.data_dir_root, ("downloads", _family(tfds_name))):
            builder.download_and_prepare(download_config=config)
    return builder


def tfds_split(tfds_name: str, split: str) -> str:
    """Maps our ``train``/``test`` onto the set's tfds split names."""
    return SPLIT_ALIASES.get(_family(tfds_name), {}).get(split, split)


def load_tfds(request: LoadRequest, tfds_name: str | None = None) -> ImageSet:
    """Generic loader for every tensorflow-datasets entry.

    Args:
        request: The `LoadRequest` (``request.name`` is the tfds name unless
            ``tfds_name`` is given).
        tfds_name: tfds name when it differs from the registry name.

    Returns:
        An `ImageSet` of ``(uint8 image, int64 label)``; sets without labels
        (LSUN) get label -1.

    Example:
        >>> from amp_tf import data
        >>> try:
        ...     data.load("cifar10", data_dir="/nonexistent-tfds-dir")
        ... except data.DataNotFoundError as err:
        ...     print("download=True" in str(err))
        True
    """
    tfds_name = tfds_name or request.name
    builder = tfds_builder(tfds_name, request)
    split = tfds_split(tfds_name, request.split)
    features = builder.info.features
    image_shape = tuple(features["image"].shape)
    label_feature = features["label"] if "label" in features else None
    ds = _pairs(builder, split, request, image_shape, labelled=label_feature is not None)
    num_examples = _num_examples(builder, split, ds)
    ds, buffer = _cache_small(ds, num_examples, image_shape)

    num_classes = getattr(label_feature, "num_classes", None)
    names = getattr(label_feature, "names", None)
    return ImageSet(
        name=request.name,
        dataset=finish_dataset(ds, request, shuffle_buffer=buffer),
        image_shape=image_shape,
        num_classes=num_classes,
        num_examples=num_examples,
        split=request.split,
        class_names=tuple(names) if names else None,
        source=str(builder.data_dir),
    )


def _pairs(builder, split, request, image_shape, labelled):
    """The split as ``(uint8 image, int64 label)`` pairs (label -1 for a set without labels)."""
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=request.seed, try_autocache=False)
    ds = builder.as_dataset(split=split, shuffle_files=request.shuffle, read_config=read_config)

    def to_pair(example):
        image = tf.ensure_shape(tf.cast(example["image"], tf.uint8), image_shape)
        if labelled:
            label = tf.cast(example["label"], tf.int64)
        else:
            label = tf.constant(-1, tf.int64)
        return image, label

    return ds.map(to_pair, num_parallel_calls=tfdata.map_calls())


def _num_examples(builder, split, ds):
    """The split's size from the tfds metadata, else the dataset's cardinality, else None."""
    try:
        return int(builder.info.splits[split].num_examples)
    except Exception:  # splits unknown (not generated metadata, mocked builders)
        card = int(ds.cardinality())
        return card if card >= 0 else None


def _cache_small(ds, num_examples, image_shape):
    """``(dataset, shuffle buffer)``: a split of fixed-size images that fits `CACHE_MAX_BYTES`
    is cached and shuffled over all of it; others keep `SHUFFLE_BUFFER`."""
    if num_examples and all(d is not None for d in image_shape):
        if num_examples * int(np.prod(image_shape)) <= CACHE_MAX_BYTES:
            return ds.cache(), num_examples
    return ds, SHUFFLE_BUFFER


for _name in TFDS_NAMES:
    register(_name)(load_tfds)
register("lsun/<category>")(load_tfds)
register("imagenet2012_corrupted/<corruption>_<1..5>")(load_tfds)
