"""The typed configuration: defaults, cxr.toml, environment variables, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_core.config import ConfigError, load_config


def test_defaults_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.data_dir == tmp_path / "data" and cfg.home == tmp_path / ".cxr" and cfg.models_dir == tmp_path / "models"
    assert cfg.ledger_path == tmp_path / ".cxr" / "ledger.sqlite" and cfg.runs_dir == tmp_path / ".cxr" / "runs"


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "cxr.toml"
    toml.write_text('data_dir = "/srv/xrays"\nseed = 5\nsplit_fractions = [0.8, 0.1, 0.1]\n')
    cfg = load_config(env={"CXR_CONFIG": str(toml), "CXR_HOME": str(tmp_path / "h")})
    assert cfg.data_dir == Path("/srv/xrays") and cfg.seed == 5 and cfg.split_fractions == (0.8, 0.1, 0.1)
    assert cfg.home == tmp_path / "h"
    cfg = load_config(env={"CXR_CONFIG": str(toml), "CXR_DATA_DIR": str(tmp_path)}, seed=9)
    assert cfg.data_dir == tmp_path and cfg.seed == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed = [", "not valid TOML"),
        ("colour = 'red'", "unknown settings"),
        ("split_fractions = [0.5, 0.1, 0.1]", "summing to 1"),
        ("seed = 'abc'", "invalid value"),
    ],
)
def test_bad_config_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "cxr.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(env={"CXR_CONFIG": str(toml)})
