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
            records is entered with ``name[key=value,...]``, e.g.
            ``"ppl_summary[row=zh].diag_delta"`` or
            ``"steering[target=fr,neurons=lape].target_rate"``.
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


_STEP = re.compile(r"([^.\[\]]+)(?:\[([^\]]+)\])?")  # name[key=value,...]; dots inside [] are values


def value_at(summary: dict, path: str) -> Any:
    """The value at ``path`` in a summary (see :attr:`Claim.path`).

    Raises:
        KeyError: naming the step that is not there.
    """
    node: Any = summary
    steps = list(_STEP.finditer(path))
    if ".".join(m.group(0) for m in steps) != path:
        raise KeyError(f"bad path {path!r}")
    for m in steps:
        name, where = m.groups()
        if not isinstance(node, dict) or name not in node:
            raise KeyError(f"{path!r}: no {name!r} here")
        node = node[name]
        if where is not None:
            want = dict(term.split("=", 1) for term in where.split(","))
            hits = [r for r in node if all(str(r.get(k)) == v for k, v in want.items())]
            if len(hits) != 1:
                raise KeyError(f"{path!r}: {len(hits)} records with {where}")
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


def _claims(notebook: str, *rows: tuple) -> list[Claim]:
    return [Claim(notebook, *row) for row in rows]


_PCT = (".0f", 100.0)  # a share written as a whole percentage
_STEER = "steering[target={},neurons={}]."
_THRESH = "threshold_effect[top_rate={},language={}]."

#: The quoted numbers, notebook by notebook (from the reference run of the embedded default).
CLAIMS: tuple[Claim, ...] = (
    *_claims(
        "01_detection",
        ("{value} of 36,864 neurons pass the filter", "thresholds.n_candidates", ",d"),
        ("(`tau` = {value})", "thresholds.tau", ".3f"),
        ("entropy {value} nats", "thresholds.cutoff", ".3f"),
        ("hold {value} memberships", "thresholds.memberships"),
        ("{value} distinct neurons", "neurons.total_distinct"),
        ("from {value} for Japanese", "neurons.per_language.ja"),
        ("down to {value} for English", "neurons.per_language.en"),
    ),
    *_claims(
        "02_distribution",
        ("{value}% of them sit in the top quarter", "neurons.regions.all.top", *_PCT),
        ("{value}% in the bottom tenth, only", "neurons.regions.all.bottom", *_PCT),
        ("only {value}% in between", "neurons.regions.all.middle", *_PCT),
        ("Japanese and Korean share the most neurons ({value})", "overlaps[pair=ja-ko].shared"),
        ("then Chinese and Japanese ({value})", "overlaps[pair=zh-ja].shared"),
        ("French and Spanish ({value})", "overlaps[pair=fr-es].shared"),
        ("({value} against 1,499", "specificity.en.active", ",d"),
        ("LAPE selects {value} of them", "specificity.en.selected"),
        ("of them, {value}%, against", "specificity.en.share", ".1f", 100.0),
        ("mean Jaccard of {value} with", "stability_mean_jaccard.all", ".2f"),
        ("half of the text ({value} tokens", "convergence[fraction=0.5,language=all].tokens", ",d"),
        ("Jaccard {value} over all languages", "convergence[fraction=0.5,language=all].jaccard",
         ".2f"),
        ("a sixteenth ({value} tokens)", "convergence[fraction=0.0625,language=all].tokens"),
        ("tokens), {value}. Every", "convergence[fraction=0.0625,language=all].jaccard", ".2f"),
        ("except Russian ({value})", "convergence[fraction=0.5,language=ru].jaccard", ".2f"),
        ("ours keeps {value}% in the", "published_comparison[model=gemma-3-270m].bottom", *_PCT),
        ("and {value}% in the top quarter, close", "published_comparison[model=gemma-3-270m].top",
         *_PCT),
        ("close to LLaMA-2-7B ({value}%", "published_comparison[model=LLaMA-2-7B].bottom", *_PCT),
        ("is layer {value}, neuron", "most_specific.layer"),
        ("neuron {value}. It fires", "most_specific.neuron"),
    ),
    *_claims(
        "03_deactivation",
        ("zeroing French's {value} neurons", "example_zero.neurons"),
        ("paragraph from {value} to", "example_zero.before", ".3f"),
        ("to {value} nats, and", "example_zero.after", ".3f"),
        ("NLL by {value} (Spanish)", "ppl_summary[row=es].diag_delta", ".2f"),
        ("to {value} nats (Chinese)", "ppl_summary[row=zh].diag_delta", ".2f"),
        ("nothing measurable ({value}, interval", "ppl_summary[row=en].diag_delta", ".2f"),
        ("interval {value} to", "ppl_summary[row=en].diag_lo", ".2f"),
        ("to {value}). Random", "ppl_summary[row=en].diag_hi", ".2f"),
        ("from {value} (French)", "ppl_summary[row=fr].matched_diag_delta", ".2f"),
        ("to {value} nats (Chinese), but", "ppl_summary[row=zh].matched_diag_delta", ".2f"),
        ("costs Chinese {value} nats", "ppl_delta.ja.zh", ".2f"),
        ("cost Japanese {value},", "ppl_delta.zh.ja", ".2f"),
        ("cost French {value}.", "ppl_delta.es.fr", ".2f"),
        ("Chinese and Russian share {value} neurons", "overlaps[pair=zh-ru].shared"),
        ("from {value} nats at `top_rate` 0.25%", _THRESH.format(0.0025, "zh") + "diag_delta",
         ".2f"),
        ("({value} neurons) to", _THRESH.format(0.0025, "zh") + "n_neurons"),
        ("to {value} at the paper's 1%", _THRESH.format(0.01, "zh") + "diag_delta", ".2f"),
        ("and {value} at 4%", _THRESH.format(0.04, "zh") + "diag_delta", ".2f"),
        ("the other two {value} nats", _THRESH.format(0.0025, "ja") + "offdiag_mean_delta",
         ".2f"),
        ("at 0.25% and {value} at 4%", _THRESH.format(0.04, "ja") + "offdiag_mean_delta", ".2f"),
    ),
    *_claims(
        "04_steering",
        ("first generated step from {value} to", "example_steer.mass_before", ".3f"),
        ("to {value}, and changes", "example_steer.mass_after", ".3f"),
        ("turns {value} of 12 answers French", _STEER.format("fr", "lape") + "target_rate", "d",
         12.0),
        ("(95% interval {value}–1.00)", _STEER.format("fr", "lape") + "target_rate_lo", ".2f"),
        ("{value} of 12 Chinese", _STEER.format("zh", "lape") + "target_rate", "d", 12.0),
        ("{value} of 12 Russian", _STEER.format("ru", "lape") + "target_rate", "d", 12.0),
        ("(interval 0.00–{value})", _STEER.format("fr", "random") + "target_rate_hi", ".2f"),
        ("{value} (French), ", _STEER.format("fr", "lape") + "target_mass", ".2f"),
        ("{value} (Chinese) and", _STEER.format("zh", "lape") + "target_mass", ".2f"),
        ("{value} (Russian). The", _STEER.format("ru", "lape") + "target_mass", ".2f"),
        ("rises from {value} to", _STEER.format("fr", "lape") + "output_ppl_unsteered", ".1f"),
        ("to {value} for French", _STEER.format("fr", "lape") + "output_ppl", ".1f"),
        ("first token of {value}% of", _STEER.format("zh", "matched") + "top1_changed_rate",
         *_PCT),
        ("({value} of 12; mass", "sweep[strength=0.5,neurons=lape].target_rate", "d", 12.0),
        ("mass {value}), at", "sweep[strength=0.5,neurons=lape].target_mass", ".2f"),
        ("perplexity {value} at 1,", "sweep[strength=1.0,neurons=lape].output_ppl", ".1f"),
        ("{value} at 2 and", "sweep[strength=2.0,neurons=lape].output_ppl", ".1f"),
        ("{value} at 4 (unsteered", "sweep[strength=4.0,neurons=lape].output_ppl", ".1f"),
    ),
)
