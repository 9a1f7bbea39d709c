"""README.md cannot rot: every Python snippet in it runs (slow tier), on the shared tiny main job's run folder
where a snippet names `runs/fmnist-X`. (tests/test_docs_flags.py checks every flag the README names.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_main_job

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_every_python_snippet_of_the_readme_runs(index, tmp_path_factory, tmp_path):
    code = SNIPPETS[index]
    if "runs/fmnist-X" in code:
        code = code.replace("runs/fmnist-X", str(tiny_main_job(tmp_path_factory)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, f"snippet {index}:\n{code}\n{proc.stderr[-3000:]}"
