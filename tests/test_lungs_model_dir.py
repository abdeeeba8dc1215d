"""The lung segmenter is found through the typed config: ``<models_dir>/lungs``, overridden by CXR_LUNGS_MODEL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SHIPPED_LUNGS_DIR
from cxr_core.config import load_config
from cxr_core.lungs.segmenter import LungModelError, load_segmenter, model_dir


def test_segmenter_dir_follows_the_models_dir_unless_cxr_lungs_model_overrides_it(tmp_path: Path) -> None:
    cfg = load_config(env={"CXR_MODELS_DIR": str(tmp_path / "models")})
    assert cfg.lungs_model is None and model_dir(cfg=cfg) == tmp_path / "models" / "lungs"
    cfg = load_config(env={"CXR_MODELS_DIR": str(tmp_path / "models"), "CXR_LUNGS_MODEL": str(tmp_path / "seg")})
    assert model_dir(cfg=cfg) == tmp_path / "seg"
    assert model_dir(tmp_path / "given", cfg) == tmp_path / "given"


def test_cxr_toml_can_name_the_segmenter(tmp_path: Path) -> None:
    toml = tmp_path / "cxr.toml"
    toml.write_text(f'models_dir = "{tmp_path / "models"}"\nlungs_model = "{tmp_path / "seg"}"\n')
    assert load_config(env={}, config_file=toml).lungs_model_dir == tmp_path / "seg"


def test_without_a_config_the_environment_decides_and_a_missing_model_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CXR_LUNGS_MODEL", raising=False)
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    assert model_dir() == tmp_path / "models" / "lungs"
    with pytest.raises(LungModelError, match="CXR_LUNGS_MODEL") as info:
        load_segmenter()
    assert str(tmp_path / "models" / "lungs" / "model.keras") in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not (SHIPPED_LUNGS_DIR / "model.keras").is_file(), reason="models/lungs not trained yet")
def test_a_segmenter_in_the_configured_models_dir_is_the_one_loaded(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED_LUNGS_DIR, tmp_path / "models" / "lungs")
    cfg = load_config(env={"CXR_MODELS_DIR": str(tmp_path / "models")})
    segmenter = load_segmenter(cfg=cfg)
    assert segmenter.path == tmp_path / "models" / "lungs" and segmenter.size > 0
