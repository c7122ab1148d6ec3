"""The ``lape`` command line: one sub-command per stage of the workbook."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .models import DEFAULT_MODEL

log = logging.getLogger("lape_utils")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id, local directory, .gguf file, {DEFAULT_MODEL!r} (embedded default) "
        "or tiny-<family> (default: %(default)s)",
    )
    p.add_argument("--dtype", default="float32", help="float32, bf16, fp16 or auto")
    p.add_argument("--device-map", default=None, help="e.g. 'auto' to shard over GPUs")


def cmd_info(args: argparse.Namespace) -> int:
    """Prints the neuron sites of a model."""
    from .models import load_model

    model = load_model(args.model, dtype=args.dtype, device_map=args.device_map)
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
    print(f"self-check   passed (zeroing one neuron moved the logits by up to "
          f"{model.check['max_logit_change']:.3g})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lape``."""
    parser = argparse.ArgumentParser(
        prog="lape",
        description="Find and steer language-specific neurons with LAPE (Tang et al., 2024).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="summarise a model's neuron sites (layers x neurons)")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("run", help="the main job on the embedded default model")
    _add_model_args(p)
    p.set_defaults(func=cmd_info, json=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lape`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"lape {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
