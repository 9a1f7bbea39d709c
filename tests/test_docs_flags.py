"""Every `--flag` that README.md and docs/*.md write next to a command exists in that command's parser.

A command is `python -m trainers.X` / `eval.X` / `benchmarks.X.Y`, `examples/X.py`, or a console
script (`amp-fmnist`, ...), in a fenced code block (one logical line, `\\` continuations joined)
or in an inline code span. The flags after it, up to a comment (`#`), a pipe or `&&` / `;`, are
checked against the option strings of the parser(s) that the command's `main(["--help"])` builds.
"""

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Console scripts (setup.py) -> the module whose `main` they run.
SCRIPTS = {"amp-fmnist": "trainers.fmnist", "amp-cifar": "trainers.cifar", "amp-imagenet": "trainers.imagenet",
           "amp-tune": "trainers.tune", "amp-eval-ood": "eval.ood", "amp-resize-study": "eval.resize_study"}
COMMAND = re.compile(r"(?:python3?\s+-m\s+((?:trainers|eval|benchmarks)(?:\.[a-z_]+)+)"
                     r"|(examples/[a-z_]+\.py)|(?<![\w/-])(" + "|".join(map(re.escape, SCRIPTS)) + r"))(?![\w.])")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _logical_lines(text):
    """Fenced code block lines (continuations joined) and inline code spans (which may wrap over the lines
    of a paragraph), with the line number where each starts."""
    out, in_block, pending, start, para = [], False, "", 0, []

    def spans():
        joined = " ".join(t for _, t in para)
        for m in re.finditer(r"`([^`]+)`", joined):
            at = len(joined[:m.start()].split(" ")) - 1  # the word index -> the line it is on
            words = 0
            for no, t in para:
                words += len(t.split(" "))
                if words > at:
                    out.append((no, m.group(1)))
                    break
        para.clear()

    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            spans()
            in_block = not in_block
            continue
        if in_block:
            if not pending:
                start = no
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending = ""
        elif line.strip():
            para.append((no, line.strip()))
        else:
            spans()
    spans()
    return out


def _segments(line):
    """`(command, the text after it)` for each command on a line; comments and other commands cut."""
    line = re.split(r"\s#", line, maxsplit=1)[0]
    found = []
    for part in re.split(r"\|\||&&|;|\|", line):
        matches = list(COMMAND.finditer(part))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(part)
            command = m.group(1) or m.group(2) or SCRIPTS[m.group(3)]
            found.append((command, part[m.end():end]))
    return found


def documented():
    """`{(command, flag): ["file:line", ...]}` over README.md and docs/*.md."""
    uses = {}
    for doc in DOCS:
        for no, line in _logical_lines(doc.read_text(encoding="utf-8")):
            for command, rest in _segments(line):
                for flag in FLAG.findall(rest):
                    uses.setdefault((command, flag), []).append(f"{doc.relative_to(ROOT)}:{no}")
                uses.setdefault((command, None), []).append(f"{doc.relative_to(ROOT)}:{no}")
    return uses


def _main_of(command):
    if command.startswith("examples/"):
        spec = importlib.util.spec_from_file_location(f"doc_{Path(command).stem}", ROOT / command)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(command)
        if hasattr(module, "__path__"):  # a package run by its __main__ (`python -m benchmarks.speed`)
            module = importlib.import_module(command + ".__main__")
    return module.main


_FLAGS = {}


def flags_of(command):
    """The option strings of every parser that `command`'s `main(["--help"])` parses with."""
    if command not in _FLAGS:
        parsers = []
        original = argparse.ArgumentParser.parse_known_args

        def recording(self, *args, **kwargs):
            parsers.append(self)
            return original(self, *args, **kwargs)

        main = _main_of(command)
        argparse.ArgumentParser.parse_known_args = recording
        try:
            with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as info:
                main(["--help"])
        finally:
            argparse.ArgumentParser.parse_known_args = original
        assert info.value.code in (0, None), f"{command} --help exited with {info.value.code}"
        _FLAGS[command] = set().union(*map(_option_strings, parsers))
    return _FLAGS[command]


def _option_strings(parser):
    """A parser's option strings, its subcommands' included."""
    out = set()
    for action in parser._actions:
        out |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _option_strings(sub)
    return out


USES = documented()
COMMANDS = sorted({c for c, _ in USES})


def test_the_docs_name_commands():
    assert {"trainers.fmnist", "trainers.cifar", "eval.ood"} <= set(COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_flag_exists(command):
    flags = flags_of(command)
    assert flags, f"{command}: no parser found"
    stale = {f: where for (c, f), where in USES.items() if c == command and f is not None and f not in flags}
    assert not stale, f"{command} has no such flag(s): " + "; ".join(
        f"{f} ({', '.join(where)})" for f, where in sorted(stale.items()))


#: Commands of other tools whose flags the docs quote (not ours to check).
OTHER_TOOLS = ("pip ", "saved_model_cli", "pytest", "git ")
#: Every command of this repository with a parser (the union is what a flag without a command must be in).
ALL_COMMANDS = ("trainers.fmnist", "trainers.cifar", "trainers.imagenet", "trainers.tune", "eval.ood",
                "eval.resize_study", "examples/anchor_your_model.py", "examples/export_litert.py",
                "examples/load_and_score.py")


def test_flags_without_a_command_exist_in_some_command():
    """A flag the docs name in prose (`--strategy mirrored` "for the trainers") is some command's flag."""
    known = set().union(*map(flags_of, {*ALL_COMMANDS, *COMMANDS}))
    unknown = {}
    for doc in DOCS:
        for no, line in _logical_lines(doc.read_text(encoding="utf-8")):
            if _segments(line) or any(tool in line for tool in OTHER_TOOLS):
                continue  # checked per command above, or another tool's
            for flag in FLAG.findall(line):
                if flag not in known:
                    unknown.setdefault(flag, []).append(f"{doc.relative_to(ROOT)}:{no}")
    assert not unknown, "flags no command has: " + "; ".join(f"{f} ({', '.join(w)})" for f, w in unknown.items())


def test_the_extraction_itself():
    text = ("Run `python -m trainers.fmnist --epochs 2 --out runs/x` or `python -m\ntrainers.tune --tuner x`\n\n```bash\n"
            ".venv/bin/python -m eval.ood --model m.keras \\\n    --id fashion_mnist  # not --nope\n"
            "python examples/export_litert.py --tiny && amp-cifar --dataset cifar10 | tee log\n"
            "python -m benchmarks.speed.against --rounds 3; python -m benchmarks.speed --quick\n```\n")
    lines = _logical_lines(text)
    segs = [s for _, line in lines for s in _segments(line)]
    got = {(c, f) for c, rest in segs for f in FLAG.findall(rest)}
    assert got == {("trainers.fmnist", "--epochs"), ("trainers.fmnist", "--out"), ("trainers.tune", "--tuner"),
                   ("eval.ood", "--model"),
                   ("eval.ood", "--id"), ("examples/export_litert.py", "--tiny"),
                   ("trainers.cifar", "--dataset"), ("benchmarks.speed.against", "--rounds"),
                   ("benchmarks.speed", "--quick")}
    fmnist = flags_of("trainers.fmnist")
    assert {"--epochs", "--strategy", "--preset", "--help"} <= fmnist and "--dataset" not in fmnist
    assert {"--widths", "--mode"} <= flags_of("benchmarks.quality.converged_pilot")  # subcommands' flags count
