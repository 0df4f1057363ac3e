"""The README's Python example runs as written, on the shipped release, from the repository root."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import REPO, subprocess_env


def test_readme_python_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no Python example"
    code = blocks[0] + "\nassert len(images) == 8 and images[0].size == (64, 64), images\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
