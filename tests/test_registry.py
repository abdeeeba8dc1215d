"""Model directories: save without optimizer state, reload in safe mode, refuse incomplete ones, list and register."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.serve.registry import (
    RegistryError,
    default_model,
    default_model_dir,
    list_models,
    load_model,
    model_version,
    register_model,
    save_model_dir,
    set_default,
)
from tiny_models import build_tiny_model as tiny_model
from tiny_models import tiny_model_dir


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Random gray images of assorted sizes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (80 + 7 * i, 90), dtype=np.uint8) for i in range(n)]


def test_saved_model_reloads_in_safe_mode_and_predicts_the_same(tmp_path: Path) -> None:
    model = tiny_model(compiled=True)
    model.fit(np.zeros((4, 64, 64, 1), np.float32), np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
    preprocess = PreprocessConfig(method="none", size=64)
    directory = save_model_dir(tmp_path / "m", model, preprocess, temperature=1.7, threshold=0.31)
    assert sorted(p.name for p in directory.iterdir()) == [
        "calibration.json",
        "classes.json",
        "model.keras",
        "preprocess.json",
    ]
    with zipfile.ZipFile(directory / "model.keras") as archive:
        assert not any("optimizer" in name for name in archive.namelist())
    loaded = load_model(directory)
    assert (loaded.classes, loaded.positive_index, loaded.positive) == (("COVID", "Normal"), 0, "COVID")
    assert (loaded.temperature, loaded.threshold) == (1.7, 0.31)
    assert loaded.version == model_version(directory) and len(loaded.version) == 12
    images = _images()
    batch = np.stack([preprocess.apply(i) for i in images]).astype(np.float32)[..., None]
    expected = np.asarray(model(batch, training=False))
    np.testing.assert_allclose(loaded.predict_probs(images, calibrated=False), expected, atol=1e-6)
    p = loaded.predict_proba(images)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    assert not np.allclose(p, expected[:, 0])  # the stored temperature is applied


def test_directory_without_preprocess_json_is_refused(tmp_path: Path) -> None:
    directory = tiny_model_dir(tmp_path / "m")
    (directory / "preprocess.json").unlink()
    with pytest.raises(RegistryError, match=r"preprocess\.json is missing"):
        load_model(directory)


def test_missing_or_corrupt_model_file_is_refused(tmp_path: Path) -> None:
    directory = tiny_model_dir(tmp_path / "m")
    (directory / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(RegistryError, match="could not be loaded in safe mode"):
        load_model(directory)
    (directory / "model.keras").unlink()
    with pytest.raises(RegistryError, match="model.keras is missing"):
        load_model(directory)
    with pytest.raises(RegistryError, match="not a model directory"):
        load_model(tmp_path / "nowhere")


def test_save_refuses_mismatched_preprocess_size(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not match"):
        save_model_dir(tmp_path / "m", tiny_model(64), PreprocessConfig(method="none", size=96))
    assert not (tmp_path / "m").exists()


def test_register_list_and_default(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    source = tiny_model_dir(
        tmp_path / "run" / "model", card={"name": "run-1", "architecture": "tiny_net", "parameters": 50}
    )
    assert default_model_dir(cfg) is None and default_model(cfg) is None
    register_model(source, cfg, "first")
    register_model(source, cfg, "second", make_default=True)
    with pytest.raises(RegistryError, match="already exists"):
        register_model(source, cfg, "first")
    with pytest.raises(RegistryError, match="invalid model name"):
        register_model(source, cfg, "../evil")
    rows = {m.name: m for m in list_models(cfg)}
    assert set(rows) == {"first", "second"} and rows["second"].default and not rows["first"].default
    assert rows["first"].arch == "tiny_net" and rows["first"].params == 50 and rows["first"].size_bytes > 0
    assert default_model(cfg).path == (cfg.models_dir / "second").resolve()
    set_default(cfg, "first")
    assert default_model_dir(cfg) == (cfg.models_dir / "first").resolve()
    assert (cfg.models_dir / "first" / "card.md").read_text().startswith("# Model card: run-1")


def test_listing_counts_weights_without_a_card(make_cfg) -> None:
    cfg = make_cfg()
    tiny_model_dir(cfg.models_dir / "default")
    segmenter = cfg.models_dir / "lungs"  # not a classifier: no preprocess.json or classes.json
    segmenter.mkdir()
    (segmenter / "model.keras").write_bytes((cfg.models_dir / "default" / "model.keras").read_bytes())
    (row,) = list_models(cfg)
    assert row.default and row.arch == "tiny_net" and row.params == tiny_model().count_params()
    assert json.loads((cfg.models_dir / "default" / "classes.json").read_text())["positive"] == "COVID"
