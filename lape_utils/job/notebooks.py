"""Executing the numbered notebooks headless (papermill) and exporting them to HTML."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..corpus import data_dir

NOTEBOOKS = ("01_detection", "02_distribution", "03_deactivation", "04_steering")


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` directory."""
    return data_dir().parent / "notebooks"


def execute_notebooks(
    out_dir: str | os.PathLike,
    parameters: dict,
    names: Sequence[str] = NOTEBOOKS,
) -> dict[str, str]:
    """Executes the numbered notebooks with papermill and exports them to HTML.

    Args:
        out_dir: Where the executed notebooks and their HTML go.
        parameters: Values for the ``parameters`` cell (papermill).
        names: Which notebooks, in order.

    Returns:
        ``{name: path of the exported HTML}``; the executed ``.ipynb`` sits next to it.
    """
    import papermill

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in names:
        src = notebooks_dir() / f"{name}.ipynb"
        dst = out / f"{name}.ipynb"
        papermill.execute_notebook(
            str(src), str(dst), parameters=parameters, cwd=str(notebooks_dir()),
            kernel_name="python3", progress_bar=False, execution_timeout=1800,
        )
        done[name] = str(export_html(dst))
    return done


def export_html(notebook: str | os.PathLike) -> Path:
    """Exports an executed notebook to HTML next to it (widget state included)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    path = Path(notebook).with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


def run_seconds(notebook: str | os.PathLike) -> float | None:
    """Seconds papermill took to execute a notebook (from its metadata), or None."""
    import nbformat

    meta = nbformat.read(str(notebook), as_version=4).metadata.get("papermill", {})
    return None if meta.get("duration") is None else round(float(meta["duration"]), 1)
