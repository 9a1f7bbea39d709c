"""BENCHMARKS.md is a results page whose tables cannot drift from the committed results files.

Its marked blocks (`<!-- table: NAME -->` and the lines after it, up to the first blank line) must equal
what `benchmarks.page` renders from `benchmarks/results/`; regenerate them with

    .venv/bin/python -m benchmarks.page --write

The rest of the page is written by hand: every decimal figure in it must appear in a generated block,
and it names no issue numbers or internal run names. JSON only, no TensorFlow: fast tier.
"""
import re

import pytest

from benchmarks.page import tables as doc

TEXT = doc.DOC.read_text()
#: The hand-written block another run fills (speed against the last release point): not generated.
RELEASE = re.compile(r"<!-- speed-against-release: begin.*?<!-- speed-against-release: end -->", re.S)
#: Decimal figures the hand-written text may use without a generated source: rules, not measurements.
RULES = {"0.5"}  # the accuracy rule of the fine-tuning choice: within 0.5 points of the vanilla model


def _hand_written(text):
    """The page less its generated blocks, its code blocks, its links and the release block."""
    text = doc.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = RELEASE.sub("", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_every_generated_block_equals_the_committed_results():
    have = doc.blocks(TEXT)
    assert sorted(have) == sorted(doc.RENDER), "a block is missing from BENCHMARKS.md, or unknown"
    assert len(re.findall(r"^<!-- table: ", TEXT, re.M)) == len(have), "a block appears twice"
    for name, body in have.items():
        assert body == doc.render(name), (f"BENCHMARKS.md block {name!r} differs from the results files: "
                                          "run python -m benchmarks.page --write")


def test_check_cli_and_a_stale_figure_is_caught(capsys):
    assert doc.main(["--check"]) == 0
    # the headline's overall FPR95 of the shipped score, changed by 0.1 point
    bad = TEXT.replace("| 29.2 ± 1.0 |", "| 29.1 ± 1.0 |", 1)
    assert bad != TEXT and "converged-headline" in doc.stale(bad)
    assert doc.regenerate(bad) == TEXT


def test_the_headline_states_the_shipped_score_plainly():
    block = doc.blocks(TEXT)["converged-verdict"]
    assert "shipped `amp[sum,exp]+mahalanobis+gram[w=0.625,0.25,0.125]`" in block
    assert "it is the best overall (29.2 against Gram's 31.7, seed std 1.0)" in block
    assert "best on near-OOD" in block and "best on far-OOD" in block
    assert 'covariate shift FPR95 27.6 against Gram\'s 26.4: it misses "at or below Gram" by 1.2 points, within one ' \
           "seed std (3.8)" in block
    setup = doc.blocks(TEXT)["converged-setup"]
    assert "**12 epochs at lr 0.01**, 1.2 epochs of warm-up" in setup


def test_a_results_page_not_a_diary():
    lines = TEXT.count("\n")
    assert lines <= 320, f"BENCHMARKS.md has {lines} lines: a results page is about 300"
    hand = _hand_written(TEXT)
    for bad in (r"\bissues?\s*#?\d+", r"(?<![\w/])#\d+\b", r"\bconverged-\d", r"CODE_VERSION", r"converged_ft8"):
        assert not re.search(bad, TEXT, re.I), f"BENCHMARKS.md names {re.search(bad, TEXT, re.I)[0]!r}"
    generated = "".join(doc.render(n) for n in doc.RENDER)
    loose = sorted({x for x in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", hand)
                    if x not in RULES and x not in generated})
    assert not loose, f"figures in BENCHMARKS.md's text with no generated source: {loose}"


@pytest.mark.parametrize("target", sorted(set(re.findall(r"\]\(([^)#]+)\)", TEXT))))
def test_links_resolve(target):
    assert (doc.DOC.parent / target).exists(), target
