"""How a command answers a user error: one ``error: <message>`` line and exit code 2.

Shared by the CLIs (`amp_tf.cli`) and the benchmarks; no TensorFlow, no argparse.

Example:

>>> @cli_errors
... def main(argv=None):
...     raise ValueError("--epochs: expected an int >= 1, got 0.")
>>> main([])                                   # doctest: +SKIP
error: --epochs: expected an int >= 1, got 0.
"""

from __future__ import annotations

import errno
import functools
import os
import sys


def cli_errors(main):
    """Wraps a command's `main(argv=None)`: user errors (ValueError, OSError incl.
    DataNotFoundError) print ``error: <message>`` to stderr and exit with code 2,
    without a traceback (OS errors in our words, `os_error_message`); Ctrl-C prints one
    line (with the exact --resume command when a run folder was interrupted) and exits
    with code 130. Set AMP_TF_DEBUG=1 to get the traceback instead."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except KeyboardInterrupt as err:
            if os.environ.get("AMP_TF_DEBUG"):
                raise
            print(interrupted_line(err, main, argv), file=sys.stderr)
            raise SystemExit(130) from None
        except (ValueError, OSError) as err:
            if os.environ.get("AMP_TF_DEBUG"):
                raise
            print(f"error: {os_error_message(err) if isinstance(err, OSError) else err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapped


#: What an OS error means, said with its path (`os_error_message`).
_ERRNO_WORDS = {
    errno.ENOTDIR: "{path}: a part of this path is a file, not a folder; give a path made of folders",
    errno.EISDIR: "{path} is a folder where a file was expected; give the file's path",
    errno.EACCES: "{path}: permission denied; use a place you may write to (or read), or change its permissions",
    errno.EPERM: "{path}: operation not permitted; use a place you may write to, or change its permissions",
    errno.ENOSPC: "no space left on the disk that holds {path}; free some space, or write elsewhere (--out)",
    errno.EDQUOT: "disk quota exceeded on the disk that holds {path}; free some space, or write elsewhere",
    errno.EROFS: "{path} is on a read-only file system; write elsewhere (--out)",
    errno.ENOENT: "{path}: no such file or folder",
    errno.ENAMETOOLONG: "{path}: the path is too long; use a shorter one",
}


def os_error_message(err):
    """An `OSError` in our words, naming its path (``[Errno 20] Not a directory: 'x'`` ->
    ``x: a part of this path is a file, not a folder; ...``); our own messages unchanged.

    Example:
        >>> os_error_message(NotADirectoryError(20, "Not a directory", "runs/notes.txt/run"))
        'runs/notes.txt/run: a part of this path is a file, not a folder; give a path made of folders.'
    """
    words = _ERRNO_WORDS.get(getattr(err, "errno", None))
    if words is None:
        return str(err)
    path = err.filename if err.filename is not None else "the path"
    return words.format(path=path) + (f" (to {err.filename2})" if getattr(err, "filename2", None) else "") + "."


def command_line(main):
    """How the user started this command: ``python -m trainers.fmnist``, ``amp-fmnist``, ..."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and str(spec.name).split(".")[0] in ("trainers", "eval", "benchmarks"):
        return f"python -m {str(spec.name).removesuffix('.__main__')}"
    script = os.path.basename(str(sys.argv[0])) if sys.argv else ""
    if script.startswith("amp-"):
        return script
    module = getattr(main, "__module__", "") or ""
    if module.startswith("amp_tf.cli."):
        leaf = module.rsplit(".", 1)[1]
        return f"python -m {'eval' if leaf in ('ood', 'resize_study') else 'trainers'}.{leaf}"
    return f"python -m {module}" if module.startswith("benchmarks.") else f"python {sys.argv[0]}"


def interrupted_line(err, main=None, argv=None):
    """The one line Ctrl-C ends with: the exact command that resumes the interrupted run
    (`amp_tf.run.runfolder.RunInterrupted`: the same flags, --out, --resume; --overwrite dropped)."""
    import shlex

    path = getattr(err, "path", None)
    if path is None:
        return "interrupted (Ctrl-C); no run folder was in progress, so there is nothing to resume."
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv) if str(a) != "--overwrite"]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(path)]
    if "--resume" not in args:
        args.append("--resume")
    return (f"interrupted (Ctrl-C): the run is kept in {getattr(err, 'work', path)}; continue it with: "
            f"{command_line(main)} {shlex.join(args)}")


def first_line(err):
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
