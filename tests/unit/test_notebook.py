"""The example notebook runs top to bottom in a real Jupyter kernel (nbclient + ipykernel),
its own assertions included, and writes its report."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.ipynb")))
def test_the_example_notebook_runs_top_to_bottom(name: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(ROOT / "examples" / name, as_version=4)
    shutil.copy(ROOT / "examples" / name, tmp_path / name)
    # the kernel imports this checkout's detector, and writes its files in tmp_path
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # a cell that raises (its assertions included) fails the run: CellExecutionError
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert any(tmp_path.glob("*.html")), "the notebook writes its report"
