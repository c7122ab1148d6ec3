"""The paper's published neuron sets: their file format, where to get them, how ours compare.

Tang et al. (ACL 2024) published seven neuron sets (LLaMA-2 7B/13B/70B, BLOOM-7B,
Mistral-7B, OPT-6.7B, Phi-2) as ``*.neuron.pth`` files: ``torch.save`` of
``List[List[LongTensor]]``, ``mask[language][layer]``, languages in the order en, zh, fr,
es, vi, id, ja. Everything about them lives here:

* :func:`from_official` / :func:`to_official`: the file format, both ways;
* :func:`official_path` / :func:`download_official` / :func:`published_sets`: find a local
  copy or fetch it from the authors' repository (the files are not redistributed here);
* :func:`compare_with_published` and :func:`plot_published_comparison`: where in the
  network each set sits, next to ours.
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
from .languages import sort_languages
from .plots import _axes, _axes_array, _lines, _title
from .selection import NeuronSelection, _as_index_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "OFFICIAL_LANGUAGES",
    "OFFICIAL_MODELS",
    "OFFICIAL_REPO",
    "OfficialModel",
    "compare_with_published",
    "download_official",
    "official_path",
    "official_url",
    "plot_published_comparison",
    "published_counts",
    "published_sets",
    "from_official",
    "to_official",
]

#: Language order of the published neuron files (index 0..6).
OFFICIAL_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "es", "vi", "id", "ja")

#: The authors' public repository.
OFFICIAL_REPO = "RUCAIBox/Language-Specific-Neurons"


class OfficialModel(NamedTuple):
    """What is known about one published neuron file.

    Attributes:
        n_layers: Transformer layers of the model (= lists per language in the file).
        n_neurons: FFN intermediate size of the model.
        n_languages: Language lists held by the file (6 files lack ``ja``).
        commit: Commit of ``RUCAIBox/Language-Specific-Neurons`` holding the file at the
            repository root (taken from a stored copy of the repository's file list).
        sha256: SHA-256 of the copy in ``shared/data/official-lape-neurons`` (believed to be
            a byte copy of the upstream file; a mismatch on download is logged, not fatal).
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


def _official_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def to_official(
    selection: NeuronSelection, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the paper's published format: ``torch.save`` of ``List[List[LongTensor]]``.

    ``mask[language][layer]`` with languages in ``selection.languages`` order. Every
    language is written, including ones with no neurons (the reference's ``bincount`` would
    drop trailing empty ones). The format has no room for language names, thresholds or
    provenance, so a sidecar ``<path>.json`` records them (the language order first of
    all); :func:`from_official` reads it back.

    Args:
        selection: The neuron sets.
        path: Target file (conventionally ``<name>.neuron.pth``).
        overwrite: Replace an existing file (and its sidecar).

    Returns:
        The path written.
    """
    path = Path(path)
    sidecar = _official_sidecar(path)
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
    path: str | os.PathLike,
    languages: Sequence[str] | None = None,
    n_neurons: int | None = None,
) -> NeuronSelection:
    """Read a ``*.neuron.pth`` file in the paper's format (``List[List[LongTensor]]``).

    Loaded with ``torch.load(weights_only=True)``.

    * ``n_layers`` is the number of per-layer tensors (the same in every language).
    * ``languages``: the argument if given; else the order recorded by the sidecar
      ``<path>.json`` that :func:`to_official` writes; else the paper's order
      (:data:`OFFICIAL_LANGUAGES`, cut to the number of lists), which is right for the
      published files and an *assumption* for others: a warning says so and the
      provenance records it (``languages_from``). Six of the seven published files hold 6
      lists; whether ``ja`` was not run or was dropped by the reference's ``bincount`` (it
      drops trailing languages with no neurons) cannot be told from the file.
    * ``n_neurons``: the argument if given; else the sidecar's; else, if the file name is
      a published one (``LLaMA-2-7B.neuron.pth`` ...; see :data:`OFFICIAL_MODELS`) with a
      matching layer count, that model's FFN width; else ``max index + 1``, only a lower
      bound, logged as a warning (pass ``n_neurons`` to be exact; masks and random controls
      depend on it).

    The config is the sidecar's, or the paper's defaults (top 1%, 0.95, 0.95), which the
    published files are consistent with (exactly 1% distinct neurons each).

    Args:
        path: The file.
        languages: Language codes, one per list in the file.
        n_neurons: FFN width of the model.

    Returns:
        The selection, ``method="lape"``, provenance naming the file, its SHA-256 and
        where the language order and the width came from.

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
        raise ValueError(
            f"{path}: languages have different layer counts {sorted(n_layers_set)}."
        )
    n_layers = n_layers_set.pop()
    name = path.name[: -len(_OFFICIAL_SUFFIX)] if path.name.endswith(_OFFICIAL_SUFFIX) else None
    sidecar = _official_sidecar(path)
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
            "the model's. Pass n_neurons= to be exact.",
            path,
            n_neurons,
        )
    if max_index >= n_neurons:
        raise ValueError(
            f"{path}: index {max_index} does not fit n_neurons={n_neurons}."
        )
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
        languages=languages,
        indices=dict(zip(languages, tensors, strict=True)),
        n_layers=n_layers,
        n_neurons=n_neurons,
        method=meta.get("method", "lape"),
        config=meta.get("config") or LapeConfig().to_dict(),
        provenance=provenance,
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


def official_url(name: str) -> str:
    """Raw-file URL of a published neuron set, pinned to the commit that holds it.

    The file names and commits come from a stored copy of the repository's file list
    (files at the repository root, not under ``activation_mask/``); the URL itself could not
    be fetched from this machine.
    """
    info = _check_official_name(name)
    return (
        f"https://raw.githubusercontent.com/{OFFICIAL_REPO}/{info.commit}/"
        f"{name}{_OFFICIAL_SUFFIX}"
    )


def official_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Find a local copy of a published neuron set, without any network access.

    Looks in ``$LAPE_OFFICIAL_DIR`` first, then in ``cache_dir`` (default
    :func:`default_official_cache`).

    Args:
        name: One of :data:`OFFICIAL_MODELS` (e.g. ``"LLaMA-2-7B"``).
        cache_dir: Cache folder to search.

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


def download_official(
    name: str,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Get a published neuron set, downloading it into the cache if no local copy exists.

    Source: ``RUCAIBox/Language-Specific-Neurons`` on GitHub (see :func:`official_url`).
    Local copies found by :func:`official_path` are used without network access (delete
    the cached file to fetch it again). The download is written atomically, checked to be a
    ``List[List[LongTensor]]`` of the expected number of layers, and its SHA-256 compared
    with :data:`OFFICIAL_MODELS` (a mismatch is logged, not fatal).

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
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
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
                name,
                digest,
                info.sha256,
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
    names: Sequence[str] | None = None,
    directory: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> dict[str, NeuronSelection]:
    """Load the paper's published neuron sets.

    Where each file is found:

    * ``directory`` given: ``<directory>/<name>.neuron.pth`` (nothing else is tried);
    * else :func:`~lape_utils.selection.official_path`: ``$LAPE_OFFICIAL_DIR``, then the
      cache ``~/.cache/lape_utils/official``;
    * else, with ``download=True``, :func:`~lape_utils.selection.download_official` fetches
      it from the authors' repository into the cache (needs the internet).

    Args:
        names: Published set names (see :data:`~lape_utils.selection.OFFICIAL_MODELS`:
            ``"LLaMA-2-7B"``, ``"LLaMA-2-13B"``, ``"LLaMA-2-70B"``, ``"BLOOM-7B"``,
            ``"Mistral-7B"``, ``"OPT-6.7B"``, ``"Phi-2-2.7B"``); ``None`` for all seven.
        directory: A folder holding the files.
        download: Download missing files (ignored when ``directory`` is given).

    Returns:
        ``{name: NeuronSelection}`` in the order of ``names``.

    Raises:
        ValueError: An unknown name.
        FileNotFoundError: A file is in none of the places looked at (and ``download`` is
            off or ``directory`` was given).
        ConnectionError: A download failed.
    """
    names = list(OFFICIAL_MODELS) if names is None else list(names)
    unknown = [n for n in names if n not in OFFICIAL_MODELS]
    if unknown:
        raise ValueError(
            f"unknown published set(s) {unknown}; known: {', '.join(OFFICIAL_MODELS)}."
        )
    out: dict[str, NeuronSelection] = {}
    for name in names:
        info = OFFICIAL_MODELS[name]
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
        out[name] = from_official(path, n_neurons=info.n_neurons)
        logger.debug("loaded published set %s from %s", name, path)
    return out


def published_counts(names: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per-layer, per-language neuron counts of the published sets, shipped with the package.

    Facts derived from the authors' files (``data/published/``; source and commits in its
    README): enough to compare where the sets sit and how large they are, offline and
    without the files. For the neuron indices themselves use :func:`published_sets`.

    Args:
        names: Published set names (see :data:`OFFICIAL_MODELS`); ``None`` for all seven.

    Returns:
        ``{name: DataFrame}`` in the order of ``names``: index ``layer``, one int column per
        language (module order) then ``"all"`` (distinct neurons of the layer), with
        ``attrs["n_neurons"]`` the model's FFN width; the input of
        :func:`compare_with_published`, :func:`plot_published_comparison` and
        :func:`lape_utils.analysis.layer_region_shares`.
    """
    names = list(OFFICIAL_MODELS) if names is None else list(names)
    for name in names:
        _check_official_name(name)
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
    ours: NeuronSelection | None,
    published: Mapping[str, NeuronSelection | pd.DataFrame],
    *,
    ours_name: str = "ours",
    bottom: float = 0.1,
    top: float = 0.25,
) -> pd.DataFrame:
    """One line per model: size of the selection and where in the network it sits.

    What the seven published files really show (defaults bottom 10%, top 25%; shares of the
    distinct selected neurons; checked in ``tests/test_analysis.py``)::

        model        layers  % selected  % per language  bottom  middle  top   peak layer
        LLaMA-2-7B     32       1.00      0.027-0.303     0.26    0.32   0.42      0
        LLaMA-2-13B    40       1.00      0.029-0.286     0.26    0.40   0.34      0
        LLaMA-2-70B    80       1.00      0.032-0.284     0.21    0.32   0.47      1
        BLOOM-7B       30       1.00      0.091-0.574     0.00    0.02   0.98     29
        Mistral-7B     32       1.00      0.017-0.339     0.03    0.21   0.75     28
        OPT-6.7B       32       1.00      0.066-0.300     0.03    0.25   0.73     29
        Phi-2-2.7B     32       1.00      0.016-0.341     0.01    0.14   0.86     29

    So: every set is exactly 1% of the FFN neurons. The LLaMA-2 sets have a real bottom
    cluster, nearly all of it in layers 0-1 (19-26% of each set; 7B: 768 neurons in layer
    0, its largest layer, and 125 in layer 1), on top of the top-layer mass.
    "Mostly bottom and top" holds for 7B and 70B (68% and 68% in bottom + top) but only
    narrowly for 13B (60%), where the middle region (0.40) holds more than the top quarter
    (0.34). BLOOM, Mistral, OPT and Phi-2 sit mostly in the top quarter (73-98%), BLOOM
    almost entirely. Details the paper's summary hides: OPT has a second, smaller bump in
    layers 5-10 (16% of its set); Mistral's mass peaks before the last layers (layers 27-29
    hold 54%, the last two only 6%). Per language the sets hold 0.016-0.574% of the
    neurons: wider than the paper's 0.02-0.34% (BLOOM's Indonesian set: 0.57%).

    Args:
        ours: Our selection (first line), or ``None`` for the published sets only.
        published: ``{model name: selection or count table}``, from :func:`published_counts`
            (shipped, offline) or :func:`published_sets` (the files themselves).
        ours_name: Label of our line.
        bottom: Fraction of layers counted as bottom (see
            :func:`lape_utils.analysis.region_layers`).
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
            "layers": n_layers,
            "neurons_per_layer": n_neurons,
            "total_neurons": total,
            "languages": len(per_lang),
            "selected": selected,
            "pct_selected": 100.0 * selected / total,
            "pct_language_min": 100.0 * per_lang.min() / total if len(per_lang) else math.nan,
            "pct_language_max": 100.0 * per_lang.max() / total if len(per_lang) else math.nan,
            "bottom": shares["bottom"],
            "middle": shares["middle"],
            "top": shares["top"],
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    return df


# ---------------------------------------------------------------------- the figure


def plot_published_comparison(
    published: Mapping[str, NeuronSelection | pd.DataFrame],
    ours: NeuronSelection | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    kind: Literal["depth", "regions", "both"] = "both",
    ours_name: str = "ours",
    bottom: float = 0.1,
    top: float = 0.25,
    title: str | None = None,
) -> Axes | np.ndarray:
    """Our selection next to the paper's published sets: where in the network they sit.

    Args:
        published: ``{model name: selection or count table}``, e.g. from
            :func:`published_counts` (offline) or :func:`published_sets`.
        ours: Our selection (drawn first, black), or ``None``.
        ax: One Axes for ``"depth"``/``"regions"``, two for ``"both"``; new figure if
            ``None``.
        kind: ``"depth"``: one line per model, x = relative depth (0 = first layer, 1 =
            last), y = density of its distinct selected neurons (fraction per layer × L, so
            1 = uniform whatever the depth); the bottom and top regions are shaded (at the
            fractions ``bottom`` and ``1 - top``; the exact layers per model are those of
            :func:`lape_utils.analysis.region_layers`).
            ``"regions"``: one horizontal stacked bar per model (ours on top) of the shares in
            the bottom / middle / top layers (:func:`lape_utils.analysis.layer_region_shares`),
            matplotlib's own stacked ``barh`` (seaborn does not stack bars).
            ``"both"``: the two side by side.
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
                published, ours, a, kind=k, ours_name=ours_name, bottom=bottom, top=top,
                title=title,
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
        profiles = pd.concat(
            [depth_profile(sel).assign(model=name) for name, sel in sets.items()]
        )
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
    table = compare_with_published(
        ours, published, ours_name=ours_name, bottom=bottom, top=top
    )
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

