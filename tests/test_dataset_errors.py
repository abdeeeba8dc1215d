"""Every command that takes a dataset refuses a bad folder with one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from cxr_core.cli.parser import main
from tiny_models import tiny_model_dir


def bad_folder(root: Path, kind: str) -> Path:
    """A folder that cannot be indexed: ``empty``, ``unreadable`` (class folders of junk) or ``bad-labels``."""
    root.mkdir(parents=True)
    if kind == "unreadable":
        (root / "COVID" / "images").mkdir(parents=True)
        (root / "COVID" / "images" / "x.png").write_bytes(b"not a png at all")
    elif kind == "bad-labels":
        cv2.imwrite(str(root / "x.png"), np.full((80, 80), 120, np.uint8))
        (root / "labels.csv").write_text("file,label\nx.png,Pneumonia\n")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model directory for the commands that need one."""
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


COMMANDS = {
    "index": lambda d, m, t: ["index", str(d)],
    "train": lambda d, m, t: ["train", "--data", str(d), "--epochs", "1"],
    "evaluate": lambda d, m, t: ["evaluate", "--data", str(d), "--model", str(m)],
    "preprocess": lambda d, m, t: ["preprocess", str(d)],
    "flags": lambda d, m, t: ["flags", str(d)],
    "audit": lambda d, m, t: ["audit", "--data", str(d), "--model", str(m)],
    "familiarity": lambda d, m, t: ["familiarity", "--data", str(d), "--model", str(m)],
    "tune": lambda d, m, t: ["tune", "--data", str(d)],
    "train-gate": lambda d, m, t: ["train-gate", "--data", str(d), "--out", str(t / "gate")],
    "train-markings": lambda d, m, t: ["train-markings", "--data", str(d), "--out", str(t / "markings")],
    "import": lambda d, m, t: ["import", str(d), "--out", str(t / "copy")],
}


@pytest.mark.parametrize("kind", ["empty", "unreadable", "bad-labels"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_dataset_gives_one_line_and_exit_2(
    command: str, kind: str, model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = bad_folder(tmp_path / "data", kind)
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_DATA_DIR", str(folder))
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    before = sorted(folder.rglob("*"))
    assert main(COMMANDS[command](folder, model, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"cxr {command}: error: ") and "Traceback" not in err, err
    assert sorted(folder.rglob("*")) == before and not (tmp_path / "copy").exists()
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a refused command left a run directory"


def test_train_on_a_folder_without_classes_or_labels_in_a_real_process(tmp_path: Path) -> None:
    folder = bad_folder(tmp_path / "data", "empty")
    env = {**os.environ, "CXR_HOME": str(tmp_path / "home"), "CXR_DATA_DIR": str(folder)}
    out = subprocess.run(
        [sys.executable, "-m", "cxr_core", "train", "--data", str(folder), "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"cxr train: error: {folder} has none of the class folders ['COVID', 'Normal'] and no labels.csv (expected "
        "CLASS/images/*.png or CLASS/*.png, or a label CSV: `cxr index DIR --labels LABELS.csv`)"
    ]
