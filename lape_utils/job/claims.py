"""The numbers the notebooks' text quotes, tied to the main job's results.

The "What you should see" text of the numbered notebooks quotes what the embedded default
model really shows. Each quoted number is a :class:`Claim`: a phrase of a notebook with a
``{value}`` slot and the place of that value in the main job's ``summary.json``. The main job
checks every claim against the run it just made (its summary lists the ones that no longer
hold), and the test suite checks them against the reference run shipped in
``docs/results/summary.json``, so text and results cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLAIMS", "Claim", "check_claims", "value_at"]


@dataclass(frozen=True)
class Claim:
    """One number quoted by a notebook.

    Attributes:
        notebook: The notebook's name, e.g. ``"01_detection"``.
        text: The phrase as it stands in the notebook's markdown, with ``{value}`` where
            the number goes.
        path: Where the number is in ``summary.json``: keys joined by dots; a list of
            records is entered with ``name[key=value]``, e.g.
            ``"ppl_summary[row=zh].diag_delta"``.
        fmt: Format of the number in the text (``format(value, fmt)``).
        scale: Multiplier applied before formatting (e.g. 100 for a percentage).
    """

    notebook: str
    text: str
    path: str
    fmt: str = "d"
    scale: float = 1.0

    def expected(self, summary: dict) -> str:
        """The phrase with the value of ``summary`` in it."""
        value = value_at(summary, self.path)
        if isinstance(value, (int, float)) and self.scale != 1.0:
            value = value * self.scale
        if self.fmt in ("d", ",d"):
            value = int(round(value))
        return self.text.format(value=format(value, self.fmt))


_STEP = re.compile(r"^([^\[\]]+)(?:\[([^=\]]+)=([^\]]+)\])?$")


def value_at(summary: dict, path: str) -> Any:
    """The value at ``path`` in a summary (see :attr:`Claim.path`).

    Raises:
        KeyError: naming the step that is not there.
    """
    node: Any = summary
    for step in path.split("."):
        m = _STEP.match(step)
        if m is None:
            raise KeyError(f"bad step {step!r} in {path!r}")
        name, key, want = m.groups()
        if not isinstance(node, dict) or name not in node:
            raise KeyError(f"{path!r}: no {name!r} here")
        node = node[name]
        if key is not None:
            hits = [r for r in node if str(r.get(key)) == want]
            if len(hits) != 1:
                raise KeyError(f"{path!r}: {len(hits)} records with {key}={want}")
            node = hits[0]
    return node


def _markdown(notebook: Path) -> str:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def check_claims(summary: dict, notebooks_dir: str | Path) -> list[str]:
    """Every claim whose phrase, with this summary's value, is not in its notebook.

    Returns:
        One message per claim that does not hold (empty when the text matches the run).
    """
    texts: dict[str, str] = {}
    problems = []
    for claim in CLAIMS:
        if claim.notebook not in texts:
            texts[claim.notebook] = _markdown(Path(notebooks_dir) / f"{claim.notebook}.ipynb")
        try:
            phrase = claim.expected(summary)
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{claim.notebook}: {claim.path}: {err}")
            continue
        if phrase not in texts[claim.notebook]:
            problems.append(
                f"{claim.notebook}: this run gives “{phrase}” ({claim.path}), which the "
                "text does not say"
            )
    return problems


#: The quoted numbers, notebook by notebook (filled from the reference run of the
#: embedded default; see the module docstring).
CLAIMS: tuple[Claim, ...] = ()
