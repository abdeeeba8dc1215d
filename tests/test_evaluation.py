"""``evaluate`` and ``cxr evaluate`` on a tiny synthetic dataset with a tiny model; reports, card and cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_dataset
from cxr_core.cli.parser import main
from cxr_core.evaluate.card import base_card
from cxr_core.evaluate.evaluate import evaluate
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.serve.registry import load_model, save_model_dir
from tiny_models import brightness_model

ISSUE_KEYS = {
    "n",
    "n_covid",
    "n_normal",
    "roc_auc",
    "pr_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "ece",
    "threshold",
    "confusion",
    "ci95",
    "by_source",
}
EXTRA_KEYS = {"at_0_5", "ece_uncalibrated", "reliability", "excluded", "label_by_source", "temperature"}


@pytest.fixture
def trained_dir(tmp_path: Path, make_cfg) -> tuple[Path, Path, object]:
    """A synthetic 2x20-image dataset and a tiny hand-weighted model saved as a model directory."""
    data = write_dataset(tmp_path / "data", n_per_class=20, size=64, seed=3)
    cfg = make_cfg(data_dir=data)
    preprocess = PreprocessConfig(method="none", size=64)
    model = brightness_model()
    card = base_card(
        "tiny", "brightness_net", model.count_params(), preprocess.to_dict(), training={"data_dir": str(data)}
    )
    directory = save_model_dir(tmp_path / "model", model, preprocess, temperature=1.3, threshold=0.4, card=card)
    return directory, data, cfg


def test_evaluate_returns_consistent_metrics(trained_dir) -> None:
    directory, data, cfg = trained_dir
    model = load_model(directory)
    result = evaluate(model, data, "all", cfg=cfg, n_boot=200)
    assert ISSUE_KEYS | EXTRA_KEYS <= set(result)
    c = result["confusion"]
    assert result["n"] == 40 == c["tp"] + c["fp"] + c["tn"] + c["fn"] == result["n_covid"] + result["n_normal"]
    assert sum(row["n"] for row in result["by_source"].values()) == 40
    assert set(result["by_source"]) == {"covid-src0", "covid-src1", "normal-src0", "normal-src1"}
    assert "sensitivity" in result["by_source"]["covid-src0"] and "specificity" not in result["by_source"]["covid-src0"]
    assert result["threshold"] == 0.4 and result["temperature"] == 1.3
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        low, high = result["ci95"][name]
        assert low <= result[name] <= high, name
    assert result["roc_auc"] > 0.8  # the synthetic COVID haze is easy to learn
    assert result["bootstrap"]["n_clusters"] == 20  # 10 patients per class, two images each
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    again = evaluate(model, data, "all", cfg=cfg, n_boot=200)  # from the prediction cache
    assert again["roc_auc"] == result["roc_auc"] and again["ci95"] == result["ci95"]
    assert any((cfg.cache_dir / "predictions").iterdir())


def test_cli_evaluate_json_prints_all_keys_and_writes_reports(trained_dir, capsys, monkeypatch) -> None:
    directory, data, cfg = trained_dir
    monkeypatch.setenv("CXR_HOME", str(cfg.home))
    assert main(["evaluate", "--model", str(directory), "--data", str(data), "--json", "--bootstrap", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert ISSUE_KEYS | EXTRA_KEYS <= set(result) and result["split"] == "test"
    for name in (
        "evaluation.json",
        "evaluation.md",
        "card.json",
        "card.md",
        "figures/roc.json",
        "figures/reliability.json",
    ):
        assert (directory / name).is_file(), name
    card = json.loads((directory / "card.json").read_text())
    assert card["metrics"]["n"] == result["n"] and card["calibration"]["temperature"] == 1.3
    assert "shortcut_audit" in card and "not diagnosis" in card["intended_use"]
    assert "## Test metrics" in (directory / "card.md").read_text()
    external = write_dataset(data.parent / "external", n_per_class=4, size=64, seed=9, layout="flat")
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(directory),
                "--data",
                str(external),
                "--split",
                "all",
                "--json",
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    other = json.loads(capsys.readouterr().out)
    assert other["n"] == 8 and Path(other["report_dir"]).parent.name == "evaluations"
    card = json.loads((directory / "card.json").read_text())
    assert card["metrics"]["n"] == result["n"]  # the model's own test figures are not overwritten
    assert card["external_evaluations"]["external-all"]["n"] == 8


def test_cli_evaluate_errors_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    (tmp_path / "empty-model").mkdir()
    assert main(["evaluate", "--model", str(tmp_path / "empty-model"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "preprocess.json is missing" in err and len(err.splitlines()) == 1


def test_cli_models_lists_the_registry(trained_dir, capsys, monkeypatch) -> None:
    directory, _, cfg = trained_dir
    models = cfg.home.parent / "registry"
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    from cxr_core.serve.registry import register_model

    register_model(directory, cfg.with_overrides(models_dir=models), "default")
    assert main(["models", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["name"] == "default" and row["default"] and row["arch"] == "brightness_net" and row["params"] > 0
    assert main(["models"]) == 0
    assert "* default model" in capsys.readouterr().out


def _one_source_per_patient(root: Path) -> Path:
    """Rewrite a synthetic manifest so that every image is its own patient (sources then share no patients)."""
    lines = (root / "manifest.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    (root / "manifest.csv").write_text(
        "\n".join([lines[0]] + [",".join(r[:3] + [Path(r[0]).stem]) for r in rows]) + "\n"
    )
    return root


def test_loso_frame_holds_out_source_and_its_patients(tmp_path: Path, make_cfg) -> None:
    from cxr_core.curation.curated import curated_index
    from cxr_core.evaluate.loso import loso_frame

    data = write_dataset(tmp_path / "data", n_per_class=12, size=64)
    index = curated_index(make_cfg(data_dir=data), data)
    frame = loso_frame(index.images(), "covid-src0")
    held = frame[frame["split"] == "test"]
    assert set(held["source"]) == {"covid-src0"} and len(held) == 6
    # conftest gives each patient one image in each of two sources: all COVID patients leave training
    assert set(frame.loc[frame["split"] != "test", "label"]) == {"Normal"}


@pytest.mark.slow
def test_leave_one_source_out_retrains_per_source(tmp_path: Path, make_cfg) -> None:
    from cxr_core.curation.curated import curated_index
    from cxr_core.evaluate.loso import LosoOptions, leave_one_source_out

    data = _one_source_per_patient(write_dataset(tmp_path / "data", n_per_class=16, size=64, seed=4))
    cfg = make_cfg(data_dir=data)
    index = curated_index(cfg, data)
    options = LosoOptions(method="none", size=64, epochs=1, min_images=4, hparams={"width": 8, "depth": 2})
    result = leave_one_source_out(cfg, index, options, log=lambda _: None)
    assert set(result["sources"]) | set(result["skipped"]) == {"covid-src0", "covid-src1", "normal-src0", "normal-src1"}
    assert result["sources"], result["skipped"]
    for source, row in result["sources"].items():
        assert row["n"] == 8 and row["accuracy"] is not None
        assert ("sensitivity" in row) == source.startswith("covid") and "roc_auc" not in row
    assert result["pooled"]["n"] == 8 * len(result["sources"])
    again = leave_one_source_out(cfg, index, options, log=lambda _: None)  # finished runs are reused
    assert again["sources"] == result["sources"]


def test_card_renders_every_section(tmp_path: Path) -> None:
    from cxr_core.evaluate.card import card_with_loso, read_card, render_markdown, write_card

    card = base_card("m", "cxr_net", 49_000, {"method": "clahe", "size": 224})
    loso = {
        "method": "retrained per source",
        "sources": {"jsrt": {"n": 73, "n_covid": 0, "n_normal": 73, "accuracy": 0.41, "specificity": 0.41}},
        "pooled": {"n": 73, "accuracy": 0.41},
    }
    card = {
        **card_with_loso(card, loso),
        "shortcut_audit": {"verdict": "shortcut likely", "auc_lungs_blanked": 0.93, "details": {"nested": 1}},
    }
    text = render_markdown(card)
    for needle in (
        "## Intended use",
        "not diagnosis",
        "## Leave-one-source-out",
        "| jsrt | 73 | 0 | 73 | 0.410",
        "markings",
        "**shortcut likely**",
        "auc_lungs_blanked: 0.930",
        "Not evaluated yet",
    ):
        assert needle.lower() in text.lower(), needle
    assert text.index("## Leave-one-source-out") < text.index("## Intended use") < text.index("## Test metrics")
    assert "worst source is jsrt (accuracy 0.410)" in text
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card and (tmp_path / "card.md").read_text() == text


def test_loso_options_follow_the_model_recipe(tmp_path: Path) -> None:
    from cxr_core.evaluate.loso import LosoOptions
    from tiny_models import tiny_model_dir

    training = {"hparams": {"width": 16}, "learning_rate": 0.001, "augmentation": {"rotation": 10.0}}
    card = base_card("m", "cxr_net", 10, {"method": "none", "size": 64}, training=training)
    options = LosoOptions.for_model(load_model(tiny_model_dir(tmp_path / "m", card=card)), epochs=3)
    assert (options.arch, options.method, options.hparams, options.lr) == ("cxr_net", "none", {"width": 16}, 0.001)
    assert options.augmentation == {"rotation": 10.0} and options.epochs == 3 and options.size == 96
    unknown = LosoOptions.for_model(load_model(tiny_model_dir(tmp_path / "u", card={**card, "architecture": "mine"})))
    assert unknown.arch == "cxr_net" and unknown.hparams == {} and unknown.lr is None
    assert options.digest() != unknown.digest()
