"""The shortcut audit on a synthetic shortcut dataset: the label is a bright corner square, the lungs are identical."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHIPPED_LUNGS_DIR as SHIPPED_MODEL_DIR
from conftest import synthetic_xray
from cxr_core.evaluate.audit import AuditOptions, image_statistics, run_audit, save_audit, verdict
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.serve.registry import load_model, save_model_dir

SIZE = 64
needs_model = pytest.mark.skipif(
    not (SHIPPED_MODEL_DIR / "model.keras").is_file(), reason="models/lungs not trained yet"
)


def shortcut_dataset(root: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """Kaggle-layout dataset where COVID images (and only they) carry a bright square in the top-left corner."""
    rng = np.random.default_rng(seed)
    rows = ["file,label,source,patient_id"]
    for label in ("COVID", "Normal"):
        folder = root / label / "images"
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            image = synthetic_xray(rng, 96, covid=False)
            if label == "COVID":
                image[4:20, 4:20] = 255
            cv2.imwrite(str(folder / f"{label}-{i}.png"), image)
            rows.append(f"{label}/images/{label}-{i}.png,{label},{label.lower()}-src,{label}-p{i}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def trained_shortcut_model(data: Path, out: Path) -> Path:
    """A tiny model fitted on the shortcut dataset, saved as a registry model directory."""
    import keras

    preprocess = PreprocessConfig(method="none", size=SIZE)
    images, labels = [], []
    for index, label in enumerate(("COVID", "Normal")):
        for path in sorted((data / label / "images").glob("*.png")):
            images.append(preprocess.apply(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
            labels.append(index)
    x = np.stack(images).astype(np.float32)[..., None]
    y = keras.utils.to_categorical(labels, 2)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, epochs=12, batch_size=8, verbose=0)
    return save_model_dir(out, model, preprocess)


def test_image_statistics_see_the_corner() -> None:
    plain = synthetic_xray(np.random.default_rng(0), 96)
    marked = plain.copy()
    marked[4:20, 4:20] = 255
    a, b = image_statistics(plain), image_statistics(marked)
    assert a.shape == b.shape and a.shape[0] >= 60
    assert not np.allclose(a, b)


def test_verdict_levels() -> None:
    base = {"auc": 0.97, "auc_lungs_only": 0.6, "stats_baseline_auc": 0.98}
    level, text = verdict({**base, "auc_lungs_blanked": 0.96, "lung_attention_mean": 0.2})
    assert level == "shortcut" and "survives with the lungs removed" in text and "not evidence" in text
    level, _ = verdict({**base, "auc_lungs_blanked": 0.55, "lung_attention_mean": 0.8, "stats_baseline_auc": 0.7})
    assert level == "lungs"


@needs_model
@pytest.mark.slow
def test_audit_exposes_a_corner_shortcut(tmp_path: Path, make_cfg) -> None:
    data = shortcut_dataset(tmp_path / "data")
    model_dir = trained_shortcut_model(data, tmp_path / "models" / "shortcut")
    model = load_model(model_dir)
    cfg = make_cfg(data_dir=data)
    result = run_audit(model, cfg, data, AuditOptions(split="all", trees=50, folds=3), progress=False)
    assert result["n"] >= 30 and 0 < result["n_covid"] < result["n"]
    assert result["auc"] > 0.9
    assert result["auc_lungs_blanked"] > 0.9
    assert result["lung_attention_mean"] < 0.3
    assert result["lung_attention_by_class"]["COVID"] < 0.3
    assert 0 < sum(result["lung_attention_distribution"]["counts"]) <= result["cam_images"]
    assert result["stats_baseline_auc"] > 0.9
    assert result["verdict_level"] == "shortcut"
    path = save_audit(model_dir, result)
    assert json.loads(path.read_text())["auc"] == result["auc"]


def test_an_audit_on_other_data_leaves_the_models_own_audit(tmp_path: Path) -> None:
    """The own test-split audit is audit.json and the card's headline; another dataset's goes beside it."""
    from cxr_core.evaluate.card import base_card, read_card, write_card

    model_dir, own_data, other_data = tmp_path / "model", tmp_path / "sample", tmp_path / "hospital b"
    write_card(model_dir, base_card("m", "cxr_net", 10, {}, training={"data_dir": str(own_data)}))

    def audit(data: Path, split: str, auc: float) -> dict:
        """A minimal audit result."""
        return {
            "data_dir": str(data),
            "split": split,
            "n": 40,
            "auc": auc,
            "auc_lungs_blanked": 0.6,
            "verdict_level": "mixed",
            "verdict": "mixed",
        }

    assert save_audit(model_dir, audit(own_data, "test", 0.97)) == model_dir / "audit.json"
    other = save_audit(model_dir, audit(other_data, "test", 0.61))
    val = save_audit(model_dir, audit(own_data, "val", 0.95))
    assert (
        other == model_dir / "audits" / "hospital-b-test" / "audit.json"
        and json.loads(other.read_text())["auc"] == 0.61
    )
    assert val == model_dir / "audits" / "sample-val" / "audit.json"
    assert json.loads((model_dir / "audit.json").read_text())["auc"] == 0.97
    card = read_card(model_dir)
    assert card["shortcut_audit"]["auc"] == 0.97
    assert {k: v["auc"] for k, v in card["other_audits"].items()} == {"hospital-b-test": 0.61, "sample-val": 0.95}
    markdown = (model_dir / "card.md").read_text()
    assert "### Audits on other datasets" in markdown and "| hospital-b-test | 40 | 0.610 |" in markdown


def test_cxr_audit_refuses_a_missing_model(tmp_path: Path, capsys) -> None:
    from cxr_core.cli.parser import main

    assert (
        main(["--home", str(tmp_path / "h"), "audit", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert "no model directory" in err and "Traceback" not in err
