"""The curation CLI: discard/keep/restore, ledger export/import/history/undo, and ``cxr flags``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, write_dataset
from cxr_core.cli.parser import main
from cxr_core.config import load_config
from cxr_core.curation.curated import curated_index


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small synthetic dataset configured through CXR_* variables; returns the data dir."""
    data = write_dataset(tmp_path / "data", n_per_class=4, size=96)
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_REVIEWER", "tester")
    monkeypatch.chdir(tmp_path)
    return data


def test_discard_is_honoured_by_the_index_and_restore_undoes_it(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config()
    before = curated_index(cfg).summary()["n_images"]
    code, out, _ = run_cli(
        capsys, "discard", "COVID/images/COVID-1.png", "--reason", "markings", "--note", "arrow", "--json"
    )
    assert code == 0
    decision = json.loads(out)["decision"]
    assert (decision["decision"], decision["reason"], decision["note"], decision["reviewer"]) == (
        "discard",
        "markings",
        "arrow",
        "tester",
    )
    index = curated_index(cfg)
    assert index.summary()["n_images"] == before - 1
    assert index.excluded_counts() == {"discarded": 1}
    assert "COVID/images/COVID-1.png" not in set(index.images()["path"])
    assert (env / "COVID/images/COVID-1.png").is_file()
    code, out, _ = run_cli(capsys, "restore", str(env / "COVID/images/COVID-1.png"), "--reviewer", "ann")
    assert code == 0 and "restore COVID/images/COVID-1.png" in out and "ann" in out
    assert curated_index(cfg).summary()["n_images"] == before


def test_bad_input_gives_one_line_errors_and_writes_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "restore", "COVID/images/COVID-2.png")
    assert code == 2 and err.strip().count("\n") == 0 and "is neither discarded nor repaired" in err
    code, _, err = run_cli(capsys, "discard", "nope.png", "--reason", "other")
    assert code == 2 and "no such image file" in err
    with pytest.raises(SystemExit):
        main(["discard", "COVID/images/COVID-2.png", "--reason", "ugly"])
    code, out, _ = run_cli(capsys, "ledger", "history", "--json")
    assert code == 0 and json.loads(out) == {"decisions": []}


def test_export_import_history_and_undo(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "discard", "COVID/images/COVID-1.png", "--reason", "duplicate")
    run_cli(capsys, "keep", "Normal/images/Normal-1.png", "--note", "checked")
    export = tmp_path / "decisions.csv"
    code, out, _ = run_cli(capsys, "ledger", "export", str(export))
    assert code == 0 and "exported 2" in out
    lines = export.read_text().splitlines()
    assert lines[0] == "sha256,path,decision,reason,note,reviewer,timestamp,details" and len(lines) == 3
    code, out, _ = run_cli(capsys, "ledger", "import", str(export), "--json")
    assert code == 0 and json.loads(out) == {"added": 0, "duplicates": 2, "errors": []}
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + "\n" + lines[1].replace("duplicate", "ugly") + "\n")
    code, out, _ = run_cli(capsys, "ledger", "import", str(bad))
    assert code == 1 and "1 bad rows" in out and "line 2: reason 'ugly'" in out
    code, out, _ = run_cli(capsys, "ledger", "history", "--json")
    rows = json.loads(out)["decisions"]
    assert [r["decision"] for r in rows] == ["keep", "discard"]
    code, out, _ = run_cli(capsys, "ledger", "undo", str(rows[1]["id"]), "--json")
    assert code == 0 and json.loads(out)["decision"]["decision"] == "restore"
    assert curated_index(load_config()).excluded_counts() == {}
    code, _, err = run_cli(capsys, "ledger", "undo", str(rows[1]["id"]))
    assert code == 2 and "not the latest" in err


def test_flags_command_prints_one_json_object(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "flags", str(env), "--json", "--min-resolution", "128")
    assert code == 0
    result = json.loads(out)
    assert result["images"] == 8
    assert result["flags"]["small"] == 8
    assert set(result["flagged"]) >= {"markings", "duplicate", "unreadable"}
    code, out, _ = run_cli(capsys, "flags", str(env))
    assert code == 0 and "8 images" in out and "markings" in out
    code, _, err = run_cli(capsys, "flags", str(env / "missing"))
    assert code == 2 and err.count("\n") == 1
