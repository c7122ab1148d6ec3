"""The interactive panels without a browser: plain callbacks, then the widgets driven by
setting values and clicking buttons, reading what they show."""

from __future__ import annotations

import json
from unittest import mock

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lape_utils import widgets as W  # noqa: E402
from lape_utils.corpus import load_prompts  # noqa: E402
from lape_utils.intervene import InterventionError  # noqa: E402
from lape_utils.lape import LapeConfig, identify  # noqa: E402
from lape_utils.selection import NeuronSelection  # noqa: E402
from lape_utils.stats import ActivationStats  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
LANGS = ["en", "fr", "zh", "ja"]
CFG = LapeConfig(top_rate=0.05, filter_rate=0.8, activation_bar_ratio=0.8)


def synthetic_stats(n_layers=6, n_neurons=64, langs=LANGS, seed=0) -> ActivationStats:
    """Counts with a language-specific block per language plus random background."""
    g = torch.Generator().manual_seed(seed)
    k = len(langs)
    n = torch.full((k,), 10_000)
    p = torch.rand(n_layers, n_neurons, k, generator=g) * 0.2
    for i in range(k):  # neurons 4i..4i+3 of the last layers fire mostly on language i
        p[-2:, 4 * i : 4 * i + 4, :] = 0.02
        p[-2:, 4 * i : 4 * i + 4, i] = 0.9
    p[0, 40:44, 2:] = 0.8  # shared zh/ja neurons in layer 0
    over_zero = (p * n).long()
    return ActivationStats(list(langs), n, over_zero, provenance={"model": "synthetic"})


@pytest.fixture(scope="module")
def stats():
    return synthetic_stats()


def counts_shown(panel) -> dict[str, int]:
    """{language: count} read back from the counts table's HTML."""
    import re

    rows = re.findall(r'<tr data-lang="([^"]+)".*?data-count="(\d+)"', panel.counts_html.value)
    return {lang: int(c) for lang, c in rows}


# ============================================================================ callbacks


def test_config_from_values_rounds_and_validates():
    cfg = W.config_from_values({"filter_rate": 0.5 + 91 * 0.005}, CFG)
    assert cfg.filter_rate == 0.955 and cfg.top_rate == CFG.top_rate
    with pytest.raises(ValueError, match="unknown threshold"):
        W.config_from_values({"top": 0.1})
    with pytest.raises(ValueError, match=r"filter_rate = 1.0 is outside \[0, 1\)"):
        W.config_from_values({"filter_rate": 1.0})


def test_reidentify_matches_identify_on_the_picked_columns(stats):
    values = CFG.to_dict()
    sel, table, msg = W.reidentify(stats, values, None)
    assert sel.equals(identify(stats.over_zero, stats.n, LANGS, CFG))
    assert "distinct neurons" in msg and "τ" in msg
    # three languages compete: identify on exactly those columns, in the statistics' order
    sub, _, _ = W.reidentify(stats, values, ["zh", "en", "ja"])
    ref = identify(stats.over_zero[..., [0, 2, 3]], stats.n[[0, 2, 3]], ["en", "zh", "ja"], CFG)
    assert sub.languages == ["en", "zh", "ja"] and sub.equals(ref)
    assert sub.provenance["model"] == "synthetic"
    assert list(table.index) == ["en", "zh", "fr", "ja", "all"]  # module order


@pytest.mark.parametrize(
    ("values", "languages", "expected"),
    [
        ({"filter_rate": 1.0}, None, r"filter_rate = 1.0 is outside"),
        ({"top_rate": 0.0}, None, r"top_rate = 0.0 is outside"),
        ({"top_rate": "a lot"}, None, r"must be a real number"),
        ({}, ["en"], "at least two languages"),
        ({}, [], "at least two languages"),
        ({}, ["en", "xx"], r"\['xx'\] are not in the statistics"),
    ],
)
def test_reidentify_returns_bad_input_as_a_message(stats, values, languages, expected):
    sel, table, msg = W.reidentify(stats, values, languages, base_config=CFG)
    assert sel is None and table is None
    assert msg.startswith("Not re-identified") and __import__("re").search(expected, msg)


def test_reidentify_reports_identification_warnings_in_the_message(stats):
    # top_rate 1.0: far fewer neurons pass the filter than requested -> identify warns
    sel, _, msg = W.reidentify(stats, {"top_rate": 1.0, "filter_rate": 0.9}, None)
    assert sel is not None and "pass the filter" in msg
    # too small a top_rate rounds to zero neurons
    sel, table, msg = W.reidentify(stats, {"top_rate": 0.0005}, None)
    assert sel.total_distinct() == 0 and "raise top_rate" in msg
    assert table.loc["all", "neurons"] == 0


def test_counts_table_known_answer():
    masks = {lang: torch.zeros(2, 10, dtype=torch.bool) for lang in ("zh", "en")}
    masks["en"][0, 1] = masks["en"][1, 2] = masks["en"][1, 3] = True
    masks["zh"][1, 3] = True  # shared with en
    sel = NeuronSelection.from_masks(masks)
    table = W.counts_table(sel)
    assert list(table.index) == ["en", "zh", "all"]  # module order, distinct total last
    assert table["neurons"].tolist() == [3, 1, 3]
    assert table.loc["en", "percent"] == pytest.approx(15.0)
    assert table.loc["zh", "name"] == "Chinese"


def test_render_counts_html_rows_counts_delta_and_escaping():
    table = pd.DataFrame(
        {"name": ["English", "<b>x</b>", "all languages (distinct)"], "neurons": [12, 3, 14],
         "percent": [1.2, 0.3, 1.4]},
        index=pd.Index(["en", "fr", "all"], name="language"),
    )
    out = W.render_counts_html(table, previous={"en": 10, "fr": 3}, caption="top 1% <cfg>")
    assert out.startswith('<table class="lape-counts"')
    assert '<tr data-lang="en"' in out and 'data-count="12"' in out and "+2" in out
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "top 1% &lt;cfg&gt;" in out
    assert ">new<" in out  # "all" had no previous value
    assert "Δ" not in W.render_counts_html(table)


def test_selection_filename_and_save(tmp_path, stats):
    sel, _, _ = W.reidentify(stats, CFG.to_dict(), ["en", "fr"])
    name = W.selection_filename(sel.config, sel.languages)
    assert name == "lape_top0.05_filter0.8_bar0.8_en-fr.pt"
    path = W.save_selection(sel, tmp_path / "sel")
    assert path.name == name and NeuronSelection.load(path).equals(sel)
    with pytest.raises(FileExistsError):
        W.save_selection(sel, tmp_path / "sel")
    W.save_selection(sel, tmp_path / "sel", overwrite=True)


def test_render_message_html_levels_and_escaping():
    out = W.render_message_html("a < b", "error")
    assert "lape-error" in out and "a &lt; b" in out


# ============================================================================ explorer


@pytest.fixture
def explorer(stats, tmp_path):
    return W.threshold_explorer(stats, config=CFG, save_dir=tmp_path / "saved")


def test_explorer_initial_state(explorer, stats):
    assert set(explorer.sliders) == set(W.THRESHOLDS)
    for name, slider in explorer.sliders.items():
        assert slider.value == getattr(CFG, name) and slider.continuous_update is False
    assert explorer.language_picker.value == tuple(LANGS)
    assert explorer.selection.equals(identify(stats.over_zero, stats.n, LANGS, CFG))
    assert explorer.config == CFG
    assert counts_shown(explorer) == explorer.counts["neurons"].to_dict()
    assert bytes(explorer.image.value).startswith(PNG)
    assert "lape-ok" in explorer.message.value
    assert set(explorer.timings) == {"identify", "redraw", "total"}
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    text = bundle["text/plain"]
    assert text.startswith("ExplorerPanel(") and "display_static" in text
    assert isinstance(explorer.widget, ipywidgets.VBox)


def test_explorer_slider_change_reidentifies_and_redraws_with_fixed_limits(explorer, stats):
    live = explorer._live
    clims = (live.heat_mesh.get_clim(), live.ov_mesh.get_clim())
    before_html, before_png = explorer.counts_html.value, bytes(explorer.image.value)
    before_counts = counts_shown(explorer)
    explorer.sliders["top_rate"].value = 0.02
    cfg = LapeConfig(top_rate=0.02, filter_rate=0.8, activation_bar_ratio=0.8)
    assert explorer.config == cfg
    assert explorer.selection.equals(identify(stats.over_zero, stats.n, LANGS, cfg))
    assert counts_shown(explorer) != before_counts and explorer.counts_html.value != before_html
    assert "Δ" in explorer.counts_html.value
    png = bytes(explorer.image.value)
    assert png != before_png and png.startswith(PNG)
    assert explorer._live is live  # same figure, artists updated in place
    assert (live.heat_mesh.get_clim(), live.ov_mesh.get_clim()) == clims
    assert "top 2%" in live.title.get_text()
    # the mesh shows the new per-layer counts
    shown = live.heat_mesh.get_array().reshape(stats.n_layers, len(LANGS))
    assert shown.sum() == sum(v for k, v in counts_shown(explorer).items() if k != "all")


def test_explorer_bad_threshold_shows_a_message_and_keeps_the_last_selection(explorer):
    good, good_html = explorer.selection, explorer.counts_html.value
    slider = explorer.sliders["filter_rate"]
    slider.max = 1.0
    slider.value = 1.0  # LapeConfig refuses 1.0
    assert "lape-error" in explorer.message.value
    assert "filter_rate = 1.0 is outside [0, 1)" in explorer.message.value
    assert "Traceback" not in explorer.message.value
    assert explorer.selection is good and explorer.counts_html.value == good_html
    slider.value = 0.9  # a good value again recovers
    assert "lape-ok" in explorer.message.value and explorer.config.filter_rate == 0.9


def test_explorer_language_picker(explorer, stats):
    explorer.language_picker.value = ("en",)
    assert "at least two languages" in explorer.message.value
    assert explorer.selection.languages == LANGS  # unchanged
    explorer.language_picker.value = ("zh", "ja")
    assert explorer.selection.languages == ["zh", "ja"]
    assert set(counts_shown(explorer)) == {"zh", "ja", "all"}
    assert explorer._live.languages == ["zh", "ja"]  # figure rebuilt for two languages
    assert bytes(explorer.image.value).startswith(PNG)


def test_explorer_save_button(explorer, tmp_path):
    explorer.save_button.click()
    saved = tmp_path / "saved" / W.selection_filename(explorer.config, LANGS)
    assert saved.exists() and saved.with_name(saved.name + ".json").exists()
    assert "lape-ok" in explorer.save_status.value and str(saved) in explorer.save_status.value
    assert NeuronSelection.load(saved).equals(explorer.selection)
    meta = json.loads(saved.with_name(saved.name + ".json").read_text())
    assert meta["config"] == CFG.to_dict()
    explorer.save_button.click()  # again: refuses to overwrite, says how
    status = explorer.save_status.value
    assert "lape-warning" in status and "overwrite" in status
    explorer.overwrite.value = True
    explorer.save_button.click()
    assert "lape-ok" in explorer.save_status.value


def test_explorer_without_save_dir_disables_saving(stats):
    panel = W.threshold_explorer(stats, config=CFG)
    assert panel.save_button.disabled and "save_dir" in panel.save_button.tooltip
    panel._on_save()
    assert "lape-error" in panel.save_status.value and "save_dir" in panel.save_status.value


def test_explorer_static_fallback(explorer):
    fig = explorer.static_figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 5  # 3 panels + 2 colour bars
    heat = fig.axes[0].collections[0]
    # limits of what it shows (not the live figure's fixed scale, which would wash it out)
    from lape_utils.analysis import layer_distribution

    top = layer_distribution(explorer.selection).to_numpy().max()
    assert heat.get_clim() == (0, max(top, 1))
    assert fig.axes[0].texts  # the static copy writes the numbers in the cells
    assert CFG.label() in fig._suptitle.get_text()
    assert explorer.static_png().startswith(PNG)
    with mock.patch("IPython.display.display") as display:
        explorer.display_static()
    kinds = [type(call.args[0]).__name__ for call in display.call_args_list]
    assert kinds == ["Image", "HTML"]
    assert 'class="lape-counts"' in display.call_args_list[1].args[0].data


def test_threshold_explorer_arguments(stats, tmp_path):
    with pytest.raises(TypeError, match="LapeConfig"):
        W.threshold_explorer(stats, config=CFG.to_dict())
    with pytest.raises(TypeError, match="ActivationStats"):
        W.threshold_explorer(stats.over_zero)
    with pytest.raises(ValueError, match="at least two"):
        W.threshold_explorer(stats, languages=["en"])
    with pytest.raises(ValueError, match="unknown threshold"):
        W.threshold_explorer(stats, ranges={"top": (0, 1, 0.1)})
    stats.save(tmp_path / "stats")
    panel = W.threshold_explorer(
        tmp_path / "stats", config=CFG, ranges={"top_rate": (0.01, 0.2, 0.01)},
        heatmap_vmax=50, languages=["fr", "en"],
    )
    assert panel.sliders["top_rate"].max == 0.2
    assert panel._live.heat_mesh.get_clim() == (0.0, 50.0)
    assert panel.selection.languages == ["en", "fr"]
    # a config value outside the default range widens the slider
    wide = W.threshold_explorer(stats, config=LapeConfig(top_rate=0.1))
    assert wide.sliders["top_rate"].max == pytest.approx(0.1)


# ============================================================================ steering


TARGETS = ["en", "fr", "zh"]


@pytest.fixture
def steering_setup(tiny):
    model = tiny("llama")
    g = torch.Generator().manual_seed(0)
    shape = (model.n_layers, model.n_neurons)
    neurons = NeuronSelection.from_masks(
        {x: torch.rand(*shape, generator=g) < 0.1 for x in TARGETS}
    )
    stats = ActivationStats(
        TARGETS, torch.full((3,), 1000), torch.randint(0, 1000, (*shape, 3), generator=g),
        activation_sum=torch.rand(*shape, 3, generator=g, dtype=torch.float64) * 3000,
    )
    return model, neurons, stats


def test_run_steering_returns_both_answers(steering_setup):
    model, neurons, stats = steering_setup
    out = W.run_steering(model, neurons, stats, "  What is a cat? ", "en", "fr", "set", 2.0, 6)
    assert out["prompt"] == "What is a cat?" and out["target"] == "fr" and out["strength"] == 2.0
    for kind in ("unsteered", "steered"):
        assert isinstance(out[kind], str)
        assert isinstance(out[f"{kind}_lang"], str) and 0 <= out[f"{kind}_score"] <= 1
        assert isinstance(out[f"{kind}_label"], str)
    assert 0 <= out["chrf"] <= 100 and out["seconds"] > 0
    json.dumps(out)  # plain values only


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("   ", "en", "fr", "set", 1.0, 4), "prompt is empty"),
        (("Hi there", "fr", "fr", "set", 1.0, 4), "source and target are both 'fr'"),
        (("Hi there", "en", "de", "set", 1.0, 4), "'de' is not in the neuron set"),
        (("Hi there", "en", "fr", "boost", 1.0, 4), "unknown steering mode"),
        (("Hi there", "en", "fr", "set", float("nan"), 4), "strength"),
        (("Hi there", "en", "fr", "set", 1.0, 0), "max_new_tokens"),
    ],
)
def test_run_steering_bad_input_raises_before_generating(steering_setup, args, expected):
    model, neurons, stats = steering_setup
    with (
        mock.patch("lape_utils.steering.generate") as gen,
        pytest.raises(InterventionError, match=expected),
    ):
        W.run_steering(model, neurons, stats, *args)
    gen.assert_not_called()


def test_render_answer_html():
    out = W.render_answer_html("steered", "Bonjour <3", "fr", 0.91, "fr", css_class="x")
    assert "Bonjour &lt;3" in out and "French (fr), confidence 0.91" in out
    assert 'data-lang="fr"' in out
    mixed = W.render_answer_html("unsteered", "", "en", 0.3, "unknown")
    assert "(empty answer)" in mixed and "unknown (best guess English (en)" in mixed


def test_steering_panel_defaults_and_prompts(steering_setup):
    model, neurons, stats = steering_setup
    panel = W.steering_panel(model, neurons, stats)
    assert panel.source.value == "en" and panel.target.value == "zh"  # first other, module order
    assert panel.prompt.value == load_prompts("builtin", language="en")[0]
    assert [v for _, v in panel.target.options] == ["en", "zh", "fr"]
    panel.source.value = "zh"  # built-in prompts follow the source language
    assert panel.prompt.value == load_prompts("builtin", language="zh")[0]
    panel.examples.value = panel.examples.options[2][1]
    assert panel.prompt.value == load_prompts("builtin", language="zh")[2]
    panel.prompt.value = "my own question"
    panel.source.value = "fr"  # a typed prompt is kept
    assert panel.prompt.value == "my own question"
    given = W.steering_panel(model, neurons, stats, prompts=["Q1?", "Q2?"], target="zh")
    assert given.prompt.value == "Q1?" and given.target.value == "zh"
    assert "application/vnd.jupyter.widget-view+json" in given._repr_mimebundle_()
    with pytest.raises(ValueError, match="target 'de'"):
        W.steering_panel(model, neurons, stats, target="de")
    with pytest.raises(ValueError, match="unknown steering mode"):
        W.steering_panel(model, neurons, stats, mode="boost")


def test_steering_panel_generates_only_on_the_button(steering_setup):
    model, neurons, stats = steering_setup
    panel = W.steering_panel(model, neurons, stats, prompts=["What is a cat?"])
    fake = {
        "prompt": "What is a cat?", "source": "en", "target": "zh", "mode": "add",
        "strength": 3.0, "max_new_tokens": 5, "zero_source": True, "unsteered": "A cat",
        "steered": "猫是", "unsteered_lang": "en", "unsteered_score": 0.8,
        "unsteered_label": "en", "steered_lang": "zh", "steered_score": 0.7,
        "steered_label": "zh", "chrf": 3.0, "target_mass_unsteered": 0.1,
        "target_mass_steered": 0.2, "seconds": 0.5,
    }
    with mock.patch("lape_utils.widgets.steering.run_steering", return_value=fake) as run:
        panel.target.value = "zh"
        panel.mode.value = "add"
        panel.strength.value = 3.0
        panel.max_new_tokens.value = 5
        panel.zero_source.value = True
        run.assert_not_called()  # no generation on settings changes
        panel.generate_button.click()
        run.assert_called_once()
        args, kwargs = run.call_args
        assert args[3:] == ("What is a cat?", "en", "zh", "add", 3.0, 5)
        assert kwargs["zero_source"] is True
    steered = panel.steered_html.value
    assert "猫是" in steered and "Chinese (zh), confidence 0.70" in steered
    assert "A cat" in panel.unsteered_html.value
    assert "add × 3, en neurons zeroed" in panel.steered_html.value
    assert "lape-ok" in panel.message.value
    panel.strength.value = 2.0
    assert "settings changed" in panel.message.value
    table = panel.static_table()
    assert len(table) == 1 and table.loc[0, "steered_detected"] == "zh (0.70)"


def test_steering_panel_end_to_end_on_a_tiny_model(steering_setup):
    model, neurons, stats = steering_setup
    panel = W.steering_panel(model, neurons, stats, max_new_tokens=6, strength=2.0, target="fr")
    panel.generate_button.click()
    assert "lape-ok" in panel.message.value, panel.message.value
    assert "detected:" in panel.unsteered_html.value and "detected:" in panel.steered_html.value
    assert "steered to fr (set × 2)" in panel.steered_html.value
    assert not panel.generate_button.disabled and panel.generate_button.description == "Generate"
    assert len(panel.results) == 1 and len(panel.static_table()) == 1
    with mock.patch("IPython.display.display") as display:
        panel.display_static()
    assert "lape-steering-table" in display.call_args.args[0].data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"source": "fr", "target": "fr"}, "source and target are both"),
    ],
)
def test_steering_panel_errors_appear_in_the_panel(steering_setup, change, expected):
    model, neurons, stats = steering_setup
    panel = W.steering_panel(model, neurons, stats, max_new_tokens=4)
    for name, value in change.items():
        getattr(panel, name).value = value
    assert panel.generate() is None
    assert "lape-error" in panel.message.value and expected in panel.message.value
    assert "Traceback" not in panel.message.value
    assert panel.steered_html.value == "" and panel.results == []
    assert not panel.generate_button.disabled


def test_steering_panel_without_stats_needs_scale(steering_setup):
    model, neurons, _ = steering_setup
    panel = W.steering_panel(model, neurons, None, max_new_tokens=4)
    panel.generate_button.click()
    assert "needs activation statistics" in panel.message.value
    panel.mode.value = "scale"
    panel.generate_button.click()
    assert "lape-ok" in panel.message.value


def test_static_table_empty_and_display(steering_setup):
    model, neurons, stats = steering_setup
    panel = W.steering_panel(model, neurons, stats)
    assert panel.static_table().empty
    with mock.patch("IPython.display.display") as display:
        panel.display_static()
    assert "no answer generated yet" in display.call_args.args[0].data
