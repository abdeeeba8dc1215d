"""``cxr fetch``: layout verification and the offline message, without touching the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_dataset
from cxr_core.data.fetch import FetchError, fetch_dataset, find_dataset_root


def test_links_downloaded_class_folders_into_the_data_dir(tmp_path: Path) -> None:
    download = write_dataset(tmp_path / "cache" / "COVID-19_Radiography_Dataset", n_per_class=2)
    target = fetch_dataset(tmp_path / "data", download=lambda handle: str(tmp_path / "cache"))
    assert (target / "COVID").is_symlink() and len(list((target / "COVID" / "images").iterdir())) == 2
    assert find_dataset_root(tmp_path / "cache") == download
    fetch_dataset(tmp_path / "data", download=lambda handle: str(tmp_path / "cache"))


def test_offline_gives_a_clear_message(tmp_path: Path) -> None:
    def offline(handle: str) -> str:
        raise ConnectionError("Name or service not known")

    with pytest.raises(FetchError, match="could not download .*Kaggle credentials"):
        fetch_dataset(tmp_path / "data", download=offline)
    assert not (tmp_path / "data").exists()


def test_wrong_layout_and_existing_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "cache" / "junk").mkdir(parents=True)
    with pytest.raises(FetchError, match="expected layout"):
        fetch_dataset(tmp_path / "data", download=lambda handle: str(tmp_path / "cache"))
    write_dataset(tmp_path / "cache2", n_per_class=1)
    (tmp_path / "data" / "COVID").mkdir(parents=True)
    with pytest.raises(FetchError, match="already exists"):
        fetch_dataset(tmp_path / "data", download=lambda handle: str(tmp_path / "cache2"))


def test_cxr_fetch_never_links_into_the_shipped_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cxr_core.cli import parser as cli
    from cxr_core.cli.commands import fetch as fetch_command

    seen: list[Path] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)
    monkeypatch.setattr(fetch_command, "fetch_dataset", lambda dest, classes: seen.append(dest) or dest)
    assert cli.main(["--home", str(tmp_path / "home"), "fetch"]) == 0
    assert seen == [(tmp_path / "data").resolve()]
