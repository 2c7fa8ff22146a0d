"""The example script, notebook and ready-made processor run as an analyst would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(bundle) -> dict[str, str]:
    return {**os.environ, "JETTAGGER_MODEL": str(bundle), "MPLBACKEND": "Agg"}


def test_example_script(tiny_bundle):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tag_fatjets.py")],
        env=_env(tiny_bundle),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "W-tag efficiency at 1% mistag" in r.stdout
    assert "jets without constituents: 0" in r.stdout


def test_example_notebook(tiny_bundle, monkeypatch):
    """Executed in a real Jupyter kernel, as a user runs it: no errors, three plots, all four pT bins."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JETTAGGER_MODEL", str(tiny_bundle))
    nb = nbformat.read(ROOT / "examples" / "tag_fatjets.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(len(centres), int(total.sum()), sorted(jets))"))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "examples")}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert outputs[-1]["text"].strip() == "4 1000 ['qcd', 'tbqq', 'wqq', 'zqq']"


@pytest.mark.slow
def test_wtag_processor(tiny_bundle):
    r = subprocess.run(
        [sys.executable, str(ROOT / "processors" / "wtag_mass.py"), "--model", str(tiny_bundle)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "tagged" in line]
    assert len(lines) == 4
    assert all(line.split("/")[1].split("=")[0].strip() == "1000" for line in lines)


def test_readme_snippet_runs_as_written(tmp_path):
    """The README's first code block, run from another folder (installed names, shipped bundle)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr
    eff = float(r.stdout.strip().rsplit(" ", 1)[-1])
    assert 0.3 < eff < 1
