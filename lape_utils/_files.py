"""File helpers shared by every writer of results: nothing is overwritten silently."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    """Raises ``FileExistsError`` naming every existing path, unless ``overwrite``."""
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        raise FileExistsError(
            f"refusing to overwrite {', '.join(existing)}; pass overwrite=True (--overwrite on "
            "the command line) to replace, or choose another path."
        )
