"""The ``summary.md`` of a main-job run: settings, timings, numbers with their intervals.

Every claim comes with its evidence: ΔNLL with 95% paired-bootstrap intervals over
held-out chunks and whether LAPE beats each control with non-overlapping intervals,
steering rates with Wilson intervals, the bootstrap stability and the budget convergence
of the selection with a plain verdict.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["render_summary"]


def _md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([str(df.index.name or "")] + cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, *row in df.itertuples(name=None):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def _ci(value: float, lo: float, hi: float, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return format(value, fmt)
    return f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def evidence_table(matrix) -> pd.DataFrame:
    """Per deactivated language: the diagonal ΔNLL of LAPE and of each control, with intervals.

    Columns: ``LAPE``, one per control (``random``, ``matched``), each "Δ [lo, hi]"; then
    ``≠ 0`` (LAPE's interval excludes 0) and ``beats <control>`` (non-overlapping
    intervals, LAPE above).
    """
    summ = matrix.summary()
    lape = summ[summ["kind"] == "lape"]
    rows = {}
    for _, r in lape.iterrows():
        row = {"LAPE": _ci(r["diag_delta"], r["diag_lo"], r["diag_hi"])}
        for c in matrix.controls:
            row[c] = _ci(r[f"{c}_diag_delta"], r[f"{c}_diag_lo"], r[f"{c}_diag_hi"])
        row["≠ 0"] = "yes" if r["diag_excludes_zero"] else "no"
        for c in matrix.controls:
            row[f"beats {c}"] = "yes" if r[f"beats_{c}"] is True else "no"
        rows[r["deactivated"]] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


def steering_evidence(steering: pd.DataFrame) -> pd.DataFrame:
    """Per target and neuron set: the target rate with its Wilson interval, costs."""
    out = steering.copy()
    out["target rate"] = [
        f"{int(round(r * n))}/{int(n)} {_ci(r, lo, hi)}"
        for r, lo, hi, n in zip(out["target_rate"], out["target_rate_lo"],
                                out["target_rate_hi"], out["n"])
    ]
    keep = ["target", "neurons", "target rate", "target_mass_unsteered", "target_mass",
            "top1_changed_rate", "output_ppl_unsteered", "output_ppl", "drift"]
    beats = [c for c in out.columns if c.startswith("beats_")]
    out[beats] = out[beats].map(lambda v: {True: "yes", False: "no"}.get(v, ""))
    return out[[c for c in keep + beats if c in out.columns]].set_index("target")


def render_summary(summary: dict, matrix, steering: pd.DataFrame) -> str:
    """The ``summary.md`` of a main-job run."""
    m, n, cfg = summary["model"], summary["neurons"], summary["config"]
    thresholds = (f"top_rate={cfg['top_rate']}, filter_rate={cfg['filter_rate']}, "
                  f"bar={cfg['activation_bar_ratio']}")
    parts = [
        f"# LAPE main job: {m['model']}",
        "",
        f"{m['n_layers']} layers x {m['n_neurons']} neurons ({m['family']}, {m['dtype']}); "
        f"weights {m['fingerprint']}.",
        "",
        "## Settings",
        "",
        _md_table(pd.DataFrame({"value": {k: str(v) for k, v in cfg.items()}})
                  .rename_axis("option")),
        "",
        "## Stage timings (seconds)",
        "",
        _md_table(pd.DataFrame({"seconds": summary["timings_s"]}).rename_axis("stage"), ".1f"),
        f"\nTotal: {summary['total_s']:.1f} s." + "".join(
            f" {name}: {nb['seconds']} s." for name, nb in summary.get("notebooks", {}).items()
        ),
        "",
        "## Corpus (detection split)",
        "",
        _md_table(pd.DataFrame(summary["corpus"]).set_index("language"), ".2f"),
        "",
        f"## Language-specific neurons (LAPE, {thresholds})",
        "",
        f"{n['total_distinct']} distinct neurons = {100 * n['share_of_all']:.2f}% of all FFN "
        "neurons (the paper: about 1%).",
        "",
        _md_table(pd.DataFrame({"neurons": n["per_language"]}).rename_axis("language"), ".0f"),
        "",
        "Share of each language's neurons in the bottom 10% / middle / top 25% of layers:",
        "",
        _md_table(pd.DataFrame(n["regions"]).T.rename_axis("language"), ".2f"),
    ]
    if "stability_mean_jaccard" in summary:
        parts += ["", "Bootstrap stability (mean Jaccard of replicate selections to the full "
                  "one; resampling the chunks of this corpus):", "",
                  _md_table(pd.DataFrame({"mean_jaccard": summary["stability_mean_jaccard"]})
                            .rename_axis("language"), ".2f")]
    if "convergence" in summary:
        conv = pd.DataFrame(summary["convergence"])
        wide = conv.pivot_table(index="language", columns="tokens", values="jaccard",
                                sort=False)
        wide.columns = [f"{int(t):,} tokens" for t in wide.columns]
        verdict = summary["converged"]
        not_conv = [k for k, v in verdict.items() if not v and k != "all"]
        reading = (
            "Every language's selection at half the budget already agrees with the full one "
            "(Jaccard ≥ 0.9): converged at this budget."
            if not not_conv else
            f"Not converged at this budget: at half the tokens the selection of "
            f"{', '.join(not_conv)} still differs from the full one (Jaccard < 0.9), so more "
            "text would still change it; the paper used ~100M tokens per language."
        )
        parts += ["", "### Budget convergence", "",
                  "Jaccard of the selection made from the first part of each language's "
                  "text to the full-budget selection:", "", _md_table(wide, ".2f"), "",
                  reading]
    if matrix is not None:
        parts += [
            "",
            "## Perplexity change when a language's neurons are zeroed (ΔNLL, nats)",
            "",
            "Rows: neurons deactivated; columns: held-out language evaluated. LAPE rows first, "
            "then the random control (same size per layer) and the activity-matched control "
            "(same size per layer, neurons as often active on the language but not specific "
            "to it). 95% intervals: paired bootstrap over held-out chunks.",
            "",
            _md_table(matrix.delta_table(), ".3f"),
            "",
            "On the own language (the diagonal):",
            "",
            _md_table(evidence_table(matrix)),
            "",
            "`≠ 0`: the LAPE interval excludes 0; `beats …`: LAPE's interval lies above the "
            "control's (non-overlapping).",
        ]
    if "threshold_effect" in summary:
        eff = pd.DataFrame(summary["threshold_effect"])
        eff["diag"] = [_ci(d, lo, hi) for d, lo, hi in
                       zip(eff["diag_delta"], eff["diag_lo"], eff["diag_hi"])]
        wide = eff.pivot(index="top_rate", columns="language", values="diag")
        size = eff.pivot(index="top_rate", columns="language", values="n_neurons")
        off = eff.groupby("top_rate")["offdiag_mean_delta"].mean()
        wide["mean off-diagonal"] = off.map(lambda v: f"{v:.2f}")
        wide["neurons (per language)"] = size.astype(int).astype(str).agg(" / ".join, axis=1)
        parts += ["", "## Threshold → effect", "",
                  "Diagonal ΔNLL [95% interval] per language as `top_rate` grows (smaller "
                  "held-out set than the matrix):", "", _md_table(wide)]
    if len(steering):
        parts += [
            "",
            "## Steering (target neurons set to their mean activation)",
            "",
            f"{cfg['steer_prompts']} {cfg['steer_source']} questions per target, "
            f"{cfg['steer_max_new_tokens']} new tokens; target rate with its 95% Wilson "
            "interval; `beats_<control>`: non-overlapping intervals.",
            "",
            _md_table(steering_evidence(steering), ".3f"),
        ]
    if "claims" in summary:
        claims = summary["claims"]
        parts += ["", "## The notebooks' text against this run", "",
                  "Every number the notebooks' “What you should see” text quotes holds in this "
                  "run." if not claims else
                  "These quoted numbers no longer hold (edit the notebooks' text, or find out "
                  "what changed):\n\n" + "\n".join(f"* {c}" for c in claims)]
    parts += ["", "Figures are in `figures/`, tables next to this file, executed notebooks in "
              "`notebooks/`."]
    return "\n".join(parts) + "\n"
