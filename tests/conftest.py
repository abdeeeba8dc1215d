"""Shared pytest fixtures: configs in temporary work dirs, the real sample, synthetic datasets, a live app and a browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pytest

from cxr_core.config import Config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("CXR_SAMPLE_DIR", REPO.parent / "shared" / "data" / "cxr-sample")).resolve()
LUNG_MASKS_DIR = Path(os.environ.get("CXR_LUNG_MASKS_DIR", REPO.parent / "shared" / "data" / "lung-masks")).resolve()
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
_SKIPPED_FOR_DATA: list[str] = []

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _need(path: Path, what: str) -> Path:
    """Return ``path`` or skip loudly (recorded for the end-of-run summary) when it is missing."""
    if not path.is_dir():
        _SKIPPED_FOR_DATA.append(what)
        pytest.skip(f"DATA MISSING: {what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real 1,502-image sample (read-only); skipped loudly where it is absent."""
    return _need(SAMPLE_DIR, "cxr-sample")


@pytest.fixture(scope="session")
def lung_masks_dir() -> Path:
    """The real lung image/mask pairs (read-only); skipped loudly where absent."""
    return _need(LUNG_MASKS_DIR, "lung-masks")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly when data-dependent tests were skipped."""
    if _SKIPPED_FOR_DATA:
        terminalreporter.write_sep("!", f"{len(_SKIPPED_FOR_DATA)} data-dependent tests SKIPPED: shared data missing")


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Config]:
    """Factory for a Config whose work dir is a fresh temporary folder."""

    def make(**overrides: object) -> Config:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "home": tmp_path / "home",
            "models_dir": tmp_path / "models",
            "workers": 1,
        }
        values.update(overrides)
        return Config(**values)  # type: ignore[arg-type]

    return make


def synthetic_xray(rng: np.random.Generator, size: int = 96, covid: bool = False) -> np.ndarray:
    """A crude chest-like image: bright body, two dark lung ellipses, noise; COVID ones get hazy lungs."""
    image = np.full((size, size), 170, np.uint8)
    for cx in (0.32, 0.68):
        cv2.ellipse(image, (int(cx * size), int(0.5 * size)), (int(0.14 * size), int(0.3 * size)), 0, 0, 360, 60, -1)
    if covid:
        haze = cv2.GaussianBlur(rng.integers(0, 90, (size, size)).astype(np.uint8), (0, 0), size / 20)
        image = cv2.add(image, haze)
    noise = rng.normal(0, 6, (size, size))
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_dataset(root: Path, n_per_class: int = 12, size: int = 96, seed: int = 0, layout: str = "kaggle") -> Path:
    """Write a small synthetic dataset (``kaggle``: CLASS/images/*.png, ``flat``: CLASS/*.png) with a manifest."""
    rng = np.random.default_rng(seed)
    rows = ["file,label,source,patient_id"]
    for label in ("COVID", "Normal"):
        folder = root / label / "images" if layout == "kaggle" else root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            path = folder / f"{label}-{i + 1}.png"
            cv2.imwrite(str(path), synthetic_xray(rng, size, covid=label == "COVID"))
            source = f"{label.lower()}-src{i % 2}"
            rows.append(f"{path.relative_to(root).as_posix()},{label},{source},{label}-p{i // 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A synthetic 24-image dataset in the Kaggle layout with a manifest (12 patients per class)."""
    return write_dataset(tmp_path / "tiny")


def _free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def streamlit_app(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory that starts ``streamlit run app.py`` on a free localhost port and returns its URL; stopped by PID."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
        port = _free_port()
        full_env = {**os.environ, "CXR_HOME": str(tmp_path / "app-home"), **(env or {})}
        log = open(tmp_path / f"streamlit-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early: {(tmp_path / f'streamlit-{port}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("streamlit did not become healthy in time")

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    """A Playwright page in Debian's headless chromium (never a downloaded browser)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing in CI: .ci/run must apt-get install chromium")
        pytest.skip("BROWSER MISSING: /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a folder (tests that must modify a dataset work on a copy, never on the shared data)."""
    shutil.copytree(src, dst)
    return dst
