r"""The ``lape`` command line: one sub-command per stage of the workbook (``lape --help``).

Example::

    lape steer --model gemma-3-270m --neurons sel.pt --stats results/stats \
        --prompts en --target fr --out results/steer-fr.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .models import DEFAULT_MODEL

log = logging.getLogger("lape_utils")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id, local directory, .gguf file, {DEFAULT_MODEL!r} (embedded "
                   "default) or tiny-<family> (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32, bf16, fp16 or auto")
    p.add_argument("--device-map", default=None, help="e.g. 'auto' to shard over GPUs")


def _model(args):
    from .models import load_model

    return load_model(args.model, dtype=args.dtype, device_map=args.device_map,
                      remote=getattr(args, "remote", False))


def cmd_info(args: argparse.Namespace) -> int:
    """Prints the neuron sites of a model."""
    model = _model(args)
    d = model.describe()
    if args.json:
        print(json.dumps(d | {"self_check": model.check}, indent=2))
        return 0
    print(f"model        {d['model']} ({d['family']}, model_type={d['model_type']})")
    print(f"neuron site  {d['site']}")
    print(f"neurons      {d['n_layers']} layers x {d['n_neurons']} neurons per layer "
          f"= {d['total_neurons']:,} MLP neurons")
    print(f"dtype        {d['dtype']} on {d['device']}")
    print(f"weights      {d['fingerprint']}")
    if "max_logit_change" in model.check:
        print(f"self-check   passed (zeroing one neuron moved the logits by up to "
              f"{model.check['max_logit_change']:.3g})")
    else:
        print("self-check   structure only (no local weights: the model runs on NDIF)")
    return 0


def _add_corpus_args(p: argparse.ArgumentParser, split: str = "detect") -> None:
    p.add_argument("--corpus", default="builtin", help="builtin, a directory of <code>.txt "
                   "files, or wikipedia (default: %(default)s)")
    p.add_argument("--split", default=split, help="builtin corpus split (default: %(default)s)")
    p.add_argument("--languages", default=None,
                   help="comma-separated codes (default: all the corpus has)")
    p.add_argument("--tokens-per-language", type=int, default=None,
                   help="token budget per language (default: what the smallest language has)")
    p.add_argument("--take-all", action="store_true",
                   help="use all text of a language short of the budget")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per chunk (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and bootstrap")


def _packed(args, tokenizer):
    from .corpus import load_corpus
    from .packing import pack

    corpus = load_corpus(
        args.corpus, args.languages, split=args.split, tokens_per_language=args.tokens_per_language,
        tokenizer=tokenizer, seed=args.seed, take_all=args.take_all,
    )
    return pack(
        corpus, tokenizer, seq_len=args.seq_len, tokens_per_language=args.tokens_per_language,
        seed=args.seed, take_all=args.take_all, chat=getattr(args, "chat", None) is True,
    )


def cmd_capture(args: argparse.Namespace) -> int:
    """Counts neuron activations per language and saves them with provenance.

    Under ``torchrun``/``accelerate launch`` every rank counts its shard (on
    ``cuda:LOCAL_RANK`` without ``--device-map``); only rank 0 prints.
    """
    import torch

    from . import distributed
    from .capture import capture

    say = print if distributed.env_rank() == 0 else (lambda *a: None)
    model = _model(args)
    if distributed.env_world_size() > 1 and args.device_map is None:
        model.hf.to(distributed.local_device())
    packed = _packed(args, model.tokenizer)
    say(packed.table().to_string(index=False))
    stats = capture(model, packed, args.out, batch_size=args.batch_size, replicates=args.replicates,
                    seed=args.seed, overwrite=args.overwrite, remote=args.remote, shard=args.shard)
    if torch.distributed.is_initialized():  # capture initialised it from torchrun's variables
        torch.distributed.destroy_process_group()
    say(stats)
    say(f"saved to {args.out}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    k, _, m = text.partition("/")
    if not (k.isdigit() and m.isdigit()):
        raise argparse.ArgumentTypeError(f"expected K/M (shard K of M, from 0), got {text!r}")
    return int(k), int(m)


def cmd_merge(args: argparse.Namespace) -> int:
    """Adds up statistics captured separately on disjoint shards of the same corpus."""
    from .stats import ActivationStats

    merged = ActivationStats.merge(*(ActivationStats.load(d) for d in args.stats))
    merged.save(args.out, overwrite=args.overwrite)
    print(merged)
    total = merged.provenance.get("corpus_chunks", {})
    for lang, spans in merged.provenance["chunks"].items():
        counted = sum(b - a for a, b in spans)
        print(f"{lang}: chunks {spans} counted ({counted} of {total.get(lang, '?')})")
    print(f"saved to {args.out}")
    return 0


def _load_stats(path: str):
    from .stats import ActivationStats

    p = Path(path)
    if p.is_dir() and (p / "stats.pt").exists():
        return ActivationStats.load(p)
    return ActivationStats.from_reference([p] if p.exists() else [path])


def cmd_identify(args: argparse.Namespace) -> int:
    """Selects language-specific neurons from saved statistics."""
    from .config import LapeConfig
    from .lape import identify
    from .published import to_official

    stats = _load_stats(args.stats)
    if args.languages:
        from .languages import parse_languages

        stats = stats.subset(parse_languages(args.languages, stats.languages))
    config = LapeConfig(top_rate=args.top_rate, filter_rate=args.filter_rate,
                        activation_bar_ratio=args.activation_bar_ratio)
    sel = identify(stats.over_zero, stats.n, stats.languages, config, method=args.method,
                   activation_sum=stats.activation_sum, provenance=stats.provenance)
    print(sel)
    print(sel.counts().sum().to_string())
    if args.format == "official":
        to_official(sel, args.out, overwrite=args.overwrite)
        print(f"language order of the lists: {', '.join(sel.languages)} "
              f"(recorded in {args.out}.json)")
    else:
        sel.save(args.out, overwrite=args.overwrite)
    print(f"saved to {args.out}")
    return 0


def load_neurons(path: str | os.PathLike, model=None):
    """Reads a neuron set: a workbook selection file, or the paper's ``*.neuron.pth``.

    A paper-format file only bounds the width from below: that of ``model`` is used when
    the layer counts agree.

    Raises:
        FileNotFoundError: no such file.
        ValueError: neither format.
    """
    from .published import from_official
    from .selection import NeuronSelection

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neuron file {str(path)!r} does not exist")
    try:
        return NeuronSelection.load(path)
    except ValueError as err:
        if "not a saved NeuronSelection" not in str(err):
            raise
    sel = from_official(path)
    if model is not None and sel.n_layers == model.n_layers and sel.n_neurons < model.n_neurons:
        sel = from_official(path, n_neurons=model.n_neurons)
    return sel


def cmd_ppl(args: argparse.Namespace) -> int:
    """Computes the perplexity-change matrix and writes it as CSV."""
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
    controls = _controls(args, selection)
    matrix = perplexity_matrix(model, selection, heldout, controls=controls,
                               batch_size=args.batch_size)
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
    from .generation import GenerationConfig
    from .intervene import check_selection
    from .steering import SteerSpec, steer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or another --out")
    prompts, prompt_lang = _prompts(args.prompts, args.limit)
    stats = _load_stats(args.stats) if args.stats else None
    model = _model(args)
    selection = load_neurons(args.neurons, model)
    check_selection(model, selection)
    spec = SteerSpec(args.target, source=args.source or prompt_lang, zero_source=args.zero_source,
                     mode=args.mode, strength=args.strength, positions=args.positions,
                     template=args.template.replace("\\n", "\n"), chat=args.chat)
    generation = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=args.sample,
        repetition_penalty=args.repetition_penalty, batch_size=args.batch_size, seed=args.seed,
    )
    controls = _controls(args, selection, stats)
    result = steer(model, selection, stats, prompts, spec, generation=generation, controls=controls)
    result.to_jsonl(out, overwrite=args.overwrite)
    print(result.summary().round(4).T.to_string())
    print(f"\nsaved {len(result.rows)} lines to {out} (+ {out.name}.json)")
    return 0


def _controls(args, selection, stats=None) -> dict:
    """The control sets the ``--random-control`` / ``--matched-control`` flags ask for."""
    from .lape import control_sets

    if args.matched_control and not args.stats:
        raise ValueError("--matched-control needs --stats (the activation probabilities)")
    if args.matched_control and stats is None:
        stats = _load_stats(args.stats)
    return control_sets(selection, stats if args.matched_control else None, args.seed,
                        random=args.random_control)


def _job_config(args: argparse.Namespace):
    """The :class:`~lape_utils.job.JobConfig` of ``lape run``: defaults, preset, options given."""
    import dataclasses

    from .job import JobConfig

    cfg = JobConfig()
    if args.preset:
        cfg = cfg.with_preset(args.preset)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(JobConfig)
             if getattr(args, f.name) is not None}
    return dataclasses.replace(cfg, **given)


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: the whole pipeline, figures, notebooks and summary."""
    from .job import run_main_job

    logging.getLogger("lape_utils.job").setLevel(logging.INFO)
    summary = run_main_job(args.out, _job_config(args))
    print((Path(args.out) / "summary.md").read_text())
    print(f"results in {args.out}/ (summary.md, figures/, notebooks/) "
          f"after {summary['total_s']:.0f} s")
    return 0


def _add_job_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`~lape_utils.job.JobConfig` field, typed by its default."""
    import dataclasses

    from .job import JobConfig
    from .job.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from named settings; options given override them")
    docs, defaults = JobConfig.field_help(), JobConfig()
    for f in dataclasses.fields(JobConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        text = f"{docs.get(f.name, '')} (default: {default!r})"
        text = text.replace("``", "").replace(":class:", "").replace("%", "%%")
        if isinstance(default, bool) or f.name == "chat":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=text)
        elif isinstance(default, tuple):
            kind = float if f.name in ("threshold_rates", "sweep_strengths") else str
            p.add_argument(flag, dest=f.name, default=None, metavar="A,B,...", help=text,
                           type=lambda v, kind=kind: tuple(
                               kind(x) for x in v.replace(",", " ").split()))
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lape``."""
    description = "Find and steer language-specific neurons with LAPE (Tang et al., 2024)."
    parser = argparse.ArgumentParser(prog="lape", description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="summarise a model's neuron sites (layers x neurons)")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("capture", help="count neuron activations per language (with provenance)")
    _add_model_args(p)
    _add_corpus_args(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--replicates", type=int, default=16, help="bootstrap replicates (0: none)")
    p.add_argument("--remote", action="store_true", help="run the trace on NDIF (nnsight remote)")
    p.add_argument("--chat", action="store_true",
                   help="pack documents as chat user turns; count only the message tokens")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute even if DIR holds statistics")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/M",
                   help="count only shard K of M (0-based), for `lape merge` later")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("merge", help="add up statistics captured on disjoint shards")
    p.add_argument("stats", nargs="+", metavar="STATS_DIR", help="capture directories")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("identify", help="select language-specific neurons from statistics")
    p.add_argument("--stats", required=True,
                   help="a capture directory, or the reference code's activation.<lang>.* files")
    p.add_argument("--languages", default=None, help="restrict to these codes")
    p.add_argument("--top-rate", type=float, default=0.01)
    p.add_argument("--filter-rate", type=float, default=0.95)
    p.add_argument("--activation-bar-ratio", type=float, default=0.95)
    p.add_argument("--method", choices=["lape", "probability", "mean_activation"], default="lape")
    p.add_argument("--format", choices=["workbook", "official"], default="workbook",
                   help="official: the paper's List[List[LongTensor]] *.neuron.pth")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output file")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("ppl", help="perplexity-change matrix of deactivating each language")
    _add_model_args(p)
    p.add_argument("--neurons", required=True,
                   help="neuron set: a workbook selection file or the paper's *.neuron.pth")
    _add_corpus_args(p, split="heldout")
    p.add_argument("--random-control", action=argparse.BooleanOptionalAction, default=True,
                   help="add same-size random rows (default: on)")
    p.add_argument("--matched-control", action="store_true",
                   help="add activity-matched rows (needs --stats)")
    p.add_argument("--stats", default=None,
                   help="activation statistics of this model (for --matched-control)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="chunks per forward (default: %(default)s)")
    p.add_argument("--remote", action="store_true",
                   help="run the forwards on NDIF (a hub id; needs NDIF_API_KEY)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output CSV (tidy; meta in OUT.json)")
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("steer", help="steer generation to a target language and measure it")
    _add_model_args(p)
    p.add_argument("--neurons", required=True,
                   help="neuron set: a workbook selection file or the paper's *.neuron.pth")
    p.add_argument("--stats", default=None,
                   help="activation statistics directory (mean activations; needed by set/add)")
    p.add_argument("--prompts", required=True,
                   help="a file of questions (one per line) or a built-in language code")
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
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="format prompts as user turns of the tokenizer's chat template "
                   "(default: when the tokenizer has one)")
    p.add_argument("--remote", action="store_true",
                   help="generate and score on NDIF (a hub id; needs NDIF_API_KEY)")
    p.add_argument("--random-control", action="store_true",
                   help="also steer with same-size random neurons")
    p.add_argument("--matched-control", action="store_true",
                   help="also steer with activity-matched neurons (needs --stats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output JSONL (config and summary in OUT.json)")
    p.set_defaults(func=cmd_steer)

    p = sub.add_parser("run", help="the main job: the whole pipeline, figures, notebooks")
    p.add_argument("--out", default="results", help="results directory (default: %(default)s)")
    _add_job_args(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lape`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"lape {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
