"""The causal sub-commands of ``lape``: ``ppl`` (the perplexity-change matrix) and ``steer``.

``cli.build_parser`` adds them with ``cli_causal.register(sub)``::

    lape ppl --model gemma-3-270m --neurons sel.pt --corpus builtin \\
        --tokens-per-language 4096 --out results/ppl.csv
    lape steer --model gemma-3-270m --neurons sel.pt --stats results/stats \\
        --prompts en --target fr --out results/steer-fr.jsonl
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["cmd_ppl", "cmd_steer", "load_neurons", "register"]


def load_neurons(path: str | os.PathLike, model=None):
    """Reads a neuron set: a workbook selection file, or the paper's ``*.neuron.pth``.

    For a paper-format file whose width cannot be told from its name, the width of
    ``model`` is used when the layer counts agree (the file only bounds it from below).

    Raises:
        FileNotFoundError: no such file.
        ValueError: neither format.
    """
    from .selection import NeuronSelection

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neuron file {str(path)!r} does not exist")
    try:
        return NeuronSelection.load(path)
    except ValueError as err:
        if "not a saved NeuronSelection" not in str(err):
            raise
    sel = NeuronSelection.from_official(path)
    if (
        model is not None
        and sel.n_layers == model.n_layers
        and sel.n_neurons < model.n_neurons
    ):
        sel = NeuronSelection.from_official(path, n_neurons=model.n_neurons)
    return sel


def _model(args):
    from .models import load_model

    return load_model(args.model, dtype=args.dtype, device_map=args.device_map)


def cmd_ppl(args: argparse.Namespace) -> int:
    """Computes the perplexity-change matrix and writes it as CSV."""
    from .cli import _packed
    from .evaluate import perplexity_matrix
    from .intervene import check_selection

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or another --out")
    model = _model(args)
    selection = load_neurons(args.neurons, model)
    check_selection(model, selection)
    if args.languages is None:
        args.languages = ",".join(selection.languages)
    heldout = _packed(args, model.tokenizer)
    print(heldout.table().to_string())
    matrix = perplexity_matrix(
        model, selection, heldout, random_control=args.random_control, seed=args.seed,
        batch_size=args.batch_size, backend=args.backend,
    )
    matrix.to_csv(out, overwrite=args.overwrite)
    print("\nΔNLL (rows: neurons deactivated, columns: held-out language)")
    print(matrix.delta_table().round(4).to_string())
    print("\nsummary")
    print(matrix.summary().round(4).to_string())
    print(f"\nsaved to {out} (+ {out.name}.json)")
    return 0


def _prompts(spec: str, limit: int | None) -> tuple[list[str], str | None]:
    """Prompts from a file, or the built-in questions of a language code."""
    from .corpus import load_prompts

    if Path(spec).exists():
        prompts, lang = load_prompts(spec), None
    else:
        prompts, lang = load_prompts("builtin", language=spec), spec
    if limit is not None:
        prompts = prompts[: int(limit)]
    return prompts, lang


def cmd_steer(args: argparse.Namespace) -> int:
    """Steers generation towards a language and writes every output as JSONL."""
    from .cli import _load_stats
    from .intervene import check_selection
    from .steer import steer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or another --out")
    prompts, prompt_lang = _prompts(args.prompts, args.limit)
    stats = _load_stats(args.stats) if args.stats else None
    model = _model(args)
    selection = load_neurons(args.neurons, model)
    check_selection(model, selection)
    result = steer(
        model, selection, stats, prompts, args.target,
        source=args.source or prompt_lang, zero_source=args.zero_source, mode=args.mode,
        strength=args.strength, positions=args.positions, random_control=args.random_control,
        seed=args.seed, template=args.template.replace("\\n", "\n"),
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample, repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size, backend=args.backend,
    )
    result.to_jsonl(out, overwrite=args.overwrite)
    print(result.summary().round(4).T.to_string())
    print(f"\nsaved {len(result.rows)} lines to {out} (+ {out.name}.json)")
    return 0


def register(subparsers) -> None:
    """Adds ``ppl`` and ``steer`` to the ``lape`` sub-command parsers."""
    from .cli import _add_corpus_args, _add_model_args

    p = subparsers.add_parser(
        "ppl",
        help="perplexity-change matrix: deactivate each language's neurons (+ random control)",
    )
    _add_model_args(p)
    p.add_argument("--neurons", required=True,
                   help="neuron set: a workbook selection file or the paper's *.neuron.pth")
    _add_corpus_args(p, split="heldout")
    p.add_argument("--random-control", action=argparse.BooleanOptionalAction, default=True,
                   help="add same-size random rows (default: on)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="chunks per forward (default: %(default)s)")
    p.add_argument("--backend", choices=["nnsight", "hooks"], default="nnsight")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output CSV (tidy; meta in OUT.json)")
    p.set_defaults(func=cmd_ppl)

    p = subparsers.add_parser("steer", help="steer generation to a target language and measure it")
    _add_model_args(p)
    p.add_argument("--neurons", required=True,
                   help="neuron set: a workbook selection file or the paper's *.neuron.pth")
    p.add_argument("--stats", default=None,
                   help="activation statistics directory (mean activations; needed by set/add)")
    p.add_argument("--prompts", required=True,
                   help="a file of questions (one per line) or a language code of the built-in "
                   "ones")
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    p.add_argument("--target", required=True, help="language to steer to")
    p.add_argument("--source", default=None,
                   help="the prompts' language (default: --prompts when it is a code)")
    p.add_argument("--zero-source", action="store_true",
                   help="also deactivate the source language's neurons")
    p.add_argument("--mode", choices=["set", "add", "scale"], default="set",
                   help="set := strength x mean activation on the target (paper), add += "
                   "strength x that mean, scale *= strength (default: %(default)s)")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--positions", choices=["all", "prompt", "generated", "last_prompt"],
                   default="all", help="where to intervene (default: every position)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repetition-penalty", type=float, default=1.1, help="paper: 1.1")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--template", default="Q: {prompt}\nA:", help="prompt format (paper's default)")
    p.add_argument("--random-control", action="store_true",
                   help="also steer with same-size random neurons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backend", choices=["nnsight", "hooks"], default="nnsight")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output JSONL (config and summary in OUT.json)")
    p.set_defaults(func=cmd_steer)
