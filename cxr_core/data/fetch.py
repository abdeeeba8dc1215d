"""Download the Kaggle COVID-19 Radiography Database with kagglehub and link it into the data dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_PAGE = "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database"
Downloader = Callable[[str], str]


class FetchError(RuntimeError):
    """The dataset could not be downloaded or does not have the expected layout."""


def find_dataset_root(folder: Path, classes: tuple[str, ...] = ("COVID", "Normal")) -> Path:
    """The folder under ``folder`` that holds ``CLASS/images`` for every class (case-insensitive)."""
    candidates = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    for candidate in candidates:
        names = {p.name.lower(): p for p in candidate.iterdir() if p.is_dir()}
        if all(c.lower() in names and (names[c.lower()] / "images").is_dir() for c in classes):
            return candidate
    raise FetchError(f"{folder} does not hold the expected layout ({', '.join(c + '/images/' for c in classes)})")


def _kagglehub_download(handle: str) -> str:
    """Download a Kaggle dataset with kagglehub (cached by kagglehub) and return its local folder."""
    import kagglehub

    return str(kagglehub.dataset_download(handle))


def fetch_dataset(
    data_dir: Path, classes: tuple[str, ...] = ("COVID", "Normal"), download: Downloader = _kagglehub_download
) -> Path:
    """Download the database and link its class folders into ``data_dir``; existing files are never replaced."""
    try:
        downloaded = Path(download(KAGGLE_HANDLE))
    except Exception as exc:  # kagglehub raises many types: network, auth, HTTP errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FetchError(
            f"could not download {KAGGLE_HANDLE} ({type(exc).__name__}: {reason[:200]}). "
            "Check the internet connection and Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY), "
            f"or download it by hand from {KAGGLE_PAGE}, unpack it and set CXR_DATA_DIR to the folder holding COVID/ and Normal/."
        ) from exc
    root = find_dataset_root(downloaded, classes)
    data_dir.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        link = data_dir / folder.name
        if link.exists() or link.is_symlink():
            if link.resolve() != folder.resolve():
                raise FetchError(
                    f"{link} already exists and is not the downloaded {folder.name}/; move it away or choose --dest"
                )
            continue
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return data_dir
