"""The paper's seven published neuron sets: their file format, where to get them, how ours compare.

The files (``<name>.neuron.pth``, ``torch.save`` of ``List[List[LongTensor]]``,
``mask[language][layer]``) are not redistributed here: they are fetched from the authors'
repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes

from ._files import refuse_overwrite
from .analysis import ALL, REGIONS, depth_profile, layer_counts, layer_region_shares
from .config import LapeConfig
from .corpus import data_dir
from .languages import PAPER_LANGUAGES, sort_languages
from .plots._common import _axes, _axes_array, _lines, _title
from .selection import NeuronSelection, _as_index_tensor, _sidecar

logger = logging.getLogger(__name__)

__all__ = [
    "OFFICIAL_LANGUAGES", "OFFICIAL_MODELS", "OFFICIAL_REPO", "OfficialModel",
    "compare_with_published", "download_official", "official_path", "official_url",
    "plot_published_comparison", "published_counts", "published_sets", "from_official",
    "to_official",
]

#: Language order of the published neuron files (index 0..6).
OFFICIAL_LANGUAGES: tuple[str, ...] = PAPER_LANGUAGES

#: The authors' public repository.
OFFICIAL_REPO = "RUCAIBox/Language-Specific-Neurons"


class OfficialModel(NamedTuple):
    """What is known about one published neuron file.

    Attributes:
        n_layers: Transformer layers of the model (= lists per language in the file).
        n_neurons: FFN intermediate size of the model.
        n_languages: Language lists held by the file (6 files lack ``ja``).
        commit: Commit of :data:`OFFICIAL_REPO` holding the file at its root.
        sha256: SHA-256 of the file (a mismatch on download is logged, not fatal).
    """

    n_layers: int
    n_neurons: int
    n_languages: int
    commit: str
    sha256: str


_C1 = "1ec944cf50adac636e8b52c5663b2c68fcbd4cd0"
_C2 = "e2236818cba435c6f33cde7f582154665030ea25"

#: Published neuron sets by name (file ``<name>.neuron.pth`` at the repository root).
OFFICIAL_MODELS: dict[str, OfficialModel] = {
    "LLaMA-2-7B": OfficialModel(
        32, 11008, 7, _C1, "6653cb977fb85a5e61b21dd8f08480e7d69a18bdabdd6e374a56203b5c018c0d"
    ),
    "LLaMA-2-13B": OfficialModel(
        40, 13824, 7, _C1, "695ce7d2da665ac05eeb8267a50765edcb315cb961afd93a318c48c0ebccb8a0"
    ),
    "LLaMA-2-70B": OfficialModel(
        80, 28672, 6, _C1, "a5384631cffaa335e5ea78b3c7d1c747af5e87f0b74d25a491a8ebac5cf94dc8"
    ),
    "BLOOM-7B": OfficialModel(
        30, 16384, 6, _C1, "c2d74f87588e650225d3a2571b3fd3db1895ef5778b31e2102ba4a42f0dee44b"
    ),
    "Mistral-7B": OfficialModel(
        32, 14336, 6, _C2, "6ff1c4e00294319ff0788071b587f36dea8816f870bbd0923be8b5d90055a39b"
    ),
    "OPT-6.7B": OfficialModel(
        32, 16384, 6, _C2, "c4ea974dc94e9d72014e6b9bd29a632973e5c66908daf7023e215efb9d1277b1"
    ),
    "Phi-2-2.7B": OfficialModel(
        32, 10240, 6, _C2, "e8a7d0ca8cf032d748b433c26d902d9580cb941b455c0a7644251f5267c6457e"
    ),
}

_OFFICIAL_SUFFIX = ".neuron.pth"
_DOWNLOAD_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------- the format


def to_official(
    selection: NeuronSelection, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the paper's format: ``torch.save`` of ``mask[language][layer]`` (LongTensors).

    Every language is written, even one with no neurons (the reference's ``bincount`` drops
    trailing empty ones). The format has no room for language names, thresholds or
    provenance, so a sidecar ``<path>.json`` records them for :func:`from_official`.

    Args:
        selection: The neuron sets.
        path: Target file (conventionally ``<name>.neuron.pth``).
        overwrite: Replace an existing file (and its sidecar).

    Returns:
        The path written.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    refuse_overwrite([path, sidecar], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save([[t.clone() for t in selection.indices[lang]] for lang in selection.languages], path)
    meta = {
        "format": "List[List[LongTensor]], mask[language][layer] (Tang et al., ACL 2024)",
        "languages": list(selection.languages),
        "n_layers": selection.n_layers,
        "n_neurons": selection.n_neurons,
        "method": selection.method,
        "config": selection.config,
        "provenance": selection.provenance,
    }
    sidecar.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def from_official(
    path: str | os.PathLike, languages: Sequence[str] | None = None, n_neurons: int | None = None
) -> NeuronSelection:
    """Read a ``*.neuron.pth`` file in the paper's format (``List[List[LongTensor]]``).

    What the file does not record comes from the sidecar that :func:`to_official` writes,
    else from the paper: :data:`OFFICIAL_LANGUAGES` cut to the number of lists (an
    assumption, with a warning, for a file that is not a published one), the FFN width of a
    published file name in :data:`OFFICIAL_MODELS`, the paper's thresholds. A width from
    ``max index + 1`` is only a lower bound (a warning; masks and controls depend on it).

    Args:
        path: The file.
        languages: Language codes, one per list in the file (default: see above).
        n_neurons: FFN width of the model (default: see above).

    Returns:
        The selection; its provenance names the file, its SHA-256 and where the language
        order and the width came from.

    Raises:
        ValueError: not the format; languages that contradict the sidecar or do not fit.
    """
    path = Path(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, (list, tuple)) or not raw or not all(
        isinstance(x, (list, tuple)) for x in raw
    ):
        raise ValueError(
            f"{path}: expected List[List[LongTensor]] (mask[language][layer]), got "
            f"{type(raw).__name__}."
        )
    n_layers_set = {len(x) for x in raw}
    if len(n_layers_set) != 1 or 0 in n_layers_set:
        raise ValueError(f"{path}: languages have different layer counts {sorted(n_layers_set)}.")
    n_layers = n_layers_set.pop()
    name = path.name[: -len(_OFFICIAL_SUFFIX)] if path.name.endswith(_OFFICIAL_SUFFIX) else None
    sidecar = _sidecar(path)
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    if languages is not None:
        languages, languages_from = list(languages), "argument"
        if meta.get("languages") and meta["languages"] != languages:
            raise ValueError(
                f"{path}: languages {languages} contradict its sidecar {sidecar.name}, which "
                f"records {meta['languages']}; omit languages= to use the recorded order."
            )
    elif meta.get("languages"):
        languages, languages_from = list(meta["languages"]), f"sidecar {sidecar.name}"
    else:
        if len(raw) > len(OFFICIAL_LANGUAGES):
            raise ValueError(
                f"{path} holds {len(raw)} language lists, more than the "
                f"{len(OFFICIAL_LANGUAGES)} official ones; pass languages=[...]."
            )
        languages = list(OFFICIAL_LANGUAGES[: len(raw)])
        if name in OFFICIAL_MODELS:
            languages_from = "the paper's order (a published file)"
        else:
            languages_from = "assumed: the paper's order (no sidecar, no languages=)"
            logger.warning(
                "%s records no language names and has no sidecar: assuming the paper's "
                "order %s. Pass languages=[...] if it was written in another order.",
                path, ", ".join(languages),
            )
    if len(languages) != len(raw):
        raise ValueError(
            f"{path} holds {len(raw)} language lists but {len(languages)} languages "
            f"were given ({languages})."
        )
    tensors = [
        [_as_index_tensor(t, f"{path.name}[{k}][{li}]") for li, t in enumerate(lists)]
        for k, lists in enumerate(raw)
    ]
    max_index = max((int(t.max()) for lists in tensors for t in lists if t.numel()), default=-1)
    if n_neurons is not None:
        source = "argument"
    elif meta.get("n_neurons"):
        n_neurons, source = int(meta["n_neurons"]), f"sidecar {sidecar.name}"
    elif name in OFFICIAL_MODELS and OFFICIAL_MODELS[name].n_layers == n_layers:
        n_neurons = OFFICIAL_MODELS[name].n_neurons
        source = f"known size of {name}"
    else:
        n_neurons = max(max_index + 1, 1)
        source = "max index + 1 (lower bound)"
        logger.warning(
            "%s: FFN width unknown; using max index + 1 = %d, which may be smaller than "
            "the model's. Pass n_neurons= to be exact.", path, n_neurons,
        )
    if max_index >= n_neurons:
        raise ValueError(f"{path}: index {max_index} does not fit n_neurons={n_neurons}.")
    provenance = {
        "source": "published LAPE neurons (Tang et al., ACL 2024)" if name in OFFICIAL_MODELS
        else "a file in the paper's format",
        "file": str(path),
        "sha256": _sha256(path),
        "model": name,
        "languages_from": languages_from,
        "n_neurons_from": source,
    }
    if meta:
        provenance["sidecar"] = meta.get("provenance", {})
    else:
        provenance["config_note"] = "paper defaults assumed; the file does not record them"
    return NeuronSelection(
        languages=languages, indices=dict(zip(languages, tensors, strict=True)),
        n_layers=n_layers, n_neurons=n_neurons, method=meta.get("method", "lape"),
        config=meta.get("config") or LapeConfig().to_dict(), provenance=provenance,
    )


# ---------------------------------------------------------------------- official files


def default_official_cache() -> Path:
    """``~/.cache/lape_utils/official`` (where :func:`download_official` stores files)."""
    return Path.home() / ".cache" / "lape_utils" / "official"


def _check_official_name(name: str) -> OfficialModel:
    if name not in OFFICIAL_MODELS:
        raise ValueError(
            f"unknown published neuron set {name!r}; known: {', '.join(OFFICIAL_MODELS)}."
        )
    return OFFICIAL_MODELS[name]


def _official_names(names: Sequence[str] | None) -> list[str]:
    """``names`` checked, or every published set."""
    names = list(OFFICIAL_MODELS) if names is None else list(names)
    for name in names:
        _check_official_name(name)
    return names


def official_url(name: str) -> str:
    """Raw-file URL of a published neuron set, pinned to the commit that holds it."""
    info = _check_official_name(name)
    return (
        f"https://raw.githubusercontent.com/{OFFICIAL_REPO}/{info.commit}/{name}{_OFFICIAL_SUFFIX}"
    )


def official_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Find a local copy of a published neuron set: in ``$LAPE_OFFICIAL_DIR``, then the cache.

    Args:
        name: One of :data:`OFFICIAL_MODELS` (e.g. ``"LLaMA-2-7B"``).
        cache_dir: Cache folder to search (default :func:`default_official_cache`).

    Returns:
        Path of ``<name>.neuron.pth``.

    Raises:
        FileNotFoundError: No copy found; the message lists where it looked.
    """
    _check_official_name(name)
    fname = name + _OFFICIAL_SUFFIX
    tried = []
    env = os.environ.get("LAPE_OFFICIAL_DIR")
    if env:
        tried.append(Path(env) / fname)
    tried.append(Path(cache_dir or default_official_cache()) / fname)
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no local copy of {fname}; looked in {', '.join(str(p) for p in tried)}. Set "
        f"LAPE_OFFICIAL_DIR to a folder holding it, or call download_official({name!r})."
    )


def download_official(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Get a published neuron set, downloading it into the cache if no local copy exists.

    The download (from :func:`official_url`) is written atomically and checked to be in the
    format with the expected number of layers.

    Args:
        name: One of :data:`OFFICIAL_MODELS`.
        cache_dir: Where to store it (default :func:`default_official_cache`).

    Returns:
        Path of the local file; read it with :func:`from_official`.

    Raises:
        ConnectionError: The file could not be fetched (e.g. no internet).
    """
    info = _check_official_name(name)
    try:
        return official_path(name, cache_dir)
    except FileNotFoundError:
        pass
    cache = Path(cache_dir or default_official_cache())
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / (name + _OFFICIAL_SUFFIX)
    url = official_url(name)
    logger.info("downloading %s from %s", name, url)
    fd, tmp_name = tempfile.mkstemp(dir=cache, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                shutil.copyfileobj(resp, fh)
        sel = from_official(tmp, n_neurons=info.n_neurons)
        if sel.n_layers != info.n_layers:
            raise ValueError(
                f"downloaded {name} has {sel.n_layers} layers, expected {info.n_layers}."
            )
        digest = _sha256(tmp)
        if digest != info.sha256:
            logger.warning(
                "%s: SHA-256 %s differs from the recorded %s (upstream may have changed).",
                name, digest, info.sha256,
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {name} from {url}: {err}. If this machine is offline, copy "
            f"{name}{_OFFICIAL_SUFFIX} into {cache} or into a folder named by "
            "$LAPE_OFFICIAL_DIR."
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# ---------------------------------------------------------------------- comparison


def published_sets(
    names: Sequence[str] | None = None, directory: str | os.PathLike | None = None, *,
    download: bool = True,
) -> dict[str, NeuronSelection]:
    """Load the paper's published neuron sets.

    Args:
        names: Keys of :data:`OFFICIAL_MODELS` (e.g. ``"LLaMA-2-7B"``); ``None`` for all seven.
        directory: A folder holding the ``<name>.neuron.pth`` files (nothing else is tried);
            ``None``: :func:`official_path`, then the download.
        download: Download missing files (:func:`download_official`; needs the internet).

    Returns:
        ``{name: NeuronSelection}`` in the order of ``names``.

    Raises:
        ValueError: An unknown name.
        FileNotFoundError: A file is in none of the places looked at.
        ConnectionError: A download failed.
    """
    out: dict[str, NeuronSelection] = {}
    for name in _official_names(names):
        if directory is not None:
            path = Path(directory) / f"{name}.neuron.pth"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found; the folder should hold the published "
                    f"<name>.neuron.pth files (or pass directory=None to use the cache)."
                )
        elif download:
            path = download_official(name)
        else:
            path = official_path(name)
        out[name] = from_official(path, n_neurons=OFFICIAL_MODELS[name].n_neurons)
        logger.debug("loaded published set %s from %s", name, path)
    return out


def published_counts(names: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per-layer, per-language neuron counts of the published sets, offline (``data/published/``).

    Args:
        names: Keys of :data:`OFFICIAL_MODELS`; ``None`` for all seven.

    Returns:
        ``{name: DataFrame}`` in the order of ``names``: index ``layer``, one int column per
        language (module order) then ``"all"`` (distinct neurons of the layer), with
        ``attrs["n_neurons"]`` the model's FFN width (see :func:`analysis.layer_counts`).
    """
    names = _official_names(names)
    table = pd.read_csv(data_dir() / "published" / "lape_neuron_counts.csv")
    out = {}
    for name in names:
        part = table[table["model"] == name]
        wide = part.pivot(index="layer", columns="language", values="neurons")
        langs = sort_languages(c for c in wide.columns if c != ALL)
        wide = wide[[*langs, ALL]].astype(int)
        wide.columns.name = "language"
        wide.attrs["n_neurons"] = OFFICIAL_MODELS[name].n_neurons
        out[name] = wide
    return out


def compare_with_published(
    ours: NeuronSelection | None, published: Mapping[str, NeuronSelection | pd.DataFrame], *,
    ours_name: str = "ours", bottom: float = 0.1, top: float = 0.25,
) -> pd.DataFrame:
    """One line per model: size of the selection and where in the network it sits.

    Args:
        ours: Our selection (first line), or ``None`` for the published sets only.
        published: ``{model name: selection or count table}``, from :func:`published_counts`
            (offline) or :func:`published_sets`.
        ours_name: Label of our line.
        bottom: Fraction of layers counted as bottom (:func:`analysis.region_layers`).
        top: Fraction of layers counted as top.

    Returns:
        DataFrame indexed by ``model``: ``layers``, ``neurons_per_layer``,
        ``total_neurons`` (``L·D``), ``languages``, ``selected`` (distinct neurons in any
        language), ``pct_selected`` (percent of ``L·D``), ``pct_language_min`` /
        ``pct_language_max`` (percent of ``L·D`` of the smallest / largest language set),
        and the region shares ``bottom``, ``middle``, ``top`` of the distinct neurons.
    """
    sets: dict[str, NeuronSelection | pd.DataFrame] = {}
    if ours is not None:
        sets[ours_name] = ours
    for name, sel in published.items():
        if name in sets:
            raise ValueError(f"model name {name!r} used twice; pass another ours_name.")
        sets[name] = sel
    rows = {}
    for name, sel in sets.items():
        counts = layer_counts(sel)
        n_layers, n_neurons = len(counts), int(counts.attrs["n_neurons"])
        total = n_layers * n_neurons
        per_lang = counts.drop(columns=ALL).sum(axis=0)
        shares = layer_region_shares(counts, bottom, top).loc[ALL]
        selected = int(counts[ALL].sum())
        rows[name] = {
            "layers": n_layers, "neurons_per_layer": n_neurons, "total_neurons": total,
            "languages": len(per_lang), "selected": selected,
            "pct_selected": 100.0 * selected / total,
            "pct_language_min": 100.0 * per_lang.min() / total if len(per_lang) else math.nan,
            "pct_language_max": 100.0 * per_lang.max() / total if len(per_lang) else math.nan,
            "bottom": shares["bottom"], "middle": shares["middle"], "top": shares["top"],
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    return df


# ---------------------------------------------------------------------- the figure


def plot_published_comparison(
    published: Mapping[str, NeuronSelection | pd.DataFrame], ours: NeuronSelection | None = None,
    ax: Axes | Sequence[Axes] | None = None, *,
    kind: Literal["depth", "regions", "both"] = "both", ours_name: str = "ours",
    bottom: float = 0.1, top: float = 0.25, title: str | None = None,
) -> Axes | np.ndarray:
    """Our selection next to the paper's published sets: where in the network they sit.

    Args:
        published: ``{model name: selection or count table}`` (as for
            :func:`compare_with_published`).
        ours: Our selection (drawn first, black), or ``None``.
        ax: One Axes for ``"depth"``/``"regions"``, two for ``"both"``; new figure if ``None``.
        kind: ``"depth"``: one line per model, the density of its distinct neurons
            (:func:`analysis.depth_profile`) against relative depth, bottom and top regions
            shaded; ``"regions"``: one stacked bar per model of its bottom / middle / top
            shares; ``"both"``: the two side by side.
        ours_name: Label of our selection.
        bottom: Fraction of layers counted as bottom.
        top: Fraction of layers counted as top.
        title: Replace the default title.

    Returns:
        The Axes, or an array ``[depth, regions]`` for ``"both"``.
    """
    if kind == "both":
        axes = _axes_array(ax, 2, (13.0, 4.2))
        for a, k in zip(axes, ("depth", "regions")):
            plot_published_comparison(
                published, ours, a, kind=k, ours_name=ours_name, bottom=bottom, top=top, title=title
            )
        return axes
    sets = ({ours_name: ours} if ours is not None else {}) | dict(published)
    if not sets:
        raise ValueError("nothing to compare: no published set and no selection of ours.")
    if kind == "depth":
        others = iter(sns.color_palette("Dark2", len(sets)).as_hex())
        colors = {
            name: "black" if ours is not None and name == ours_name else next(others)
            for name in sets
        }
        profiles = pd.concat([depth_profile(sel).assign(model=name) for name, sel in sets.items()])
        ax = _axes(ax, (7.0, 4.2))
        ax.axvspan(0, bottom, color="#eeeeee", zorder=0)
        ax.axvspan(1 - top, 1, color="#eeeeee", zorder=0)
        lines = _lines(ax, profiles, "relative_depth", "density", "model", colors, lw=1.3)
        if ours is not None and lines and lines[0].get_label() == ours_name:
            lines[0].set_linewidth(2.4)
        ax.set(xlim=(0, 1), ylim=(0, None), xlabel="relative depth (0 = first layer, 1 = last)",
               ylabel="density of selected neurons (1 = uniform)")
        ax.legend(fontsize="small")
        _title(ax, "Where the neurons sit", ours, title)
        return ax
    if kind != "regions":
        raise ValueError(f"kind must be 'depth', 'regions' or 'both', got {kind!r}.")
    table = compare_with_published(ours, published, ours_name=ours_name, bottom=bottom, top=top)
    ax = _axes(ax, (7.0, 1.2 + 0.45 * len(table)))
    y = np.arange(len(table))
    left = np.zeros(len(table))
    colors = {"bottom": "#4c72b0", "middle": "#cccccc", "top": "#dd8452"}
    labels = {"bottom": f"bottom {bottom:.0%} of layers", "top": f"top {top:.0%} of layers"}
    for region in REGIONS:
        w = table[region].to_numpy(dtype=float)
        bars = ax.barh(y, w, left=left, color=colors[region], label=labels.get(region, region))
        ax.bar_label(bars, labels=[f"{v:.0%}" if v >= 0.06 else "" for v in w],
                     label_type="center", fontsize="small")
        left += np.nan_to_num(w)
    ax.set_yticks(y, labels=list(table.index))
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of the selected neurons")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3)
    _title(ax, "Share of the neurons in each layer region", ours, title)
    return ax


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

