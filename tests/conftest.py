"""Shared pytest fixtures: configs in temporary work dirs, the real sample, synthetic datasets, a live app and a browser."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cxr_core.config import Config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("CXR_SAMPLE_DIR", REPO.parent / "shared" / "data" / "cxr-sample")).resolve()
LUNG_MASKS_DIR = Path(os.environ.get("CXR_LUNG_MASKS_DIR", REPO.parent / "shared" / "data" / "lung-masks")).resolve()
SHIPPED_LUNGS_DIR = REPO / "models" / "lungs"
SHIPPED_GATE_DIR = REPO / "models" / "gate"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-proxy-server",
]
_SKIPPED_FOR_DATA: list[str] = []

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The synthetic "X-rays" most tests draw are no real films, so the gate's content check is off unless a test
# turns the shipped gate on (tests/test_gate*.py, the refusal page and browser tests).
os.environ.setdefault("CXR_GATE_MODEL", "off")


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


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[Path], None]:
    """Point the app (pages, AppTest) at a data dir of the test's choosing, a private work dir and registry, and
    the shipped lung segmenter."""

    def set_env(data_dir: Path) -> None:
        """Set CXR_DATA_DIR to ``data_dir``, CXR_HOME and CXR_MODELS_DIR to the test's tmp dir, CXR_LUNGS_MODEL."""
        monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
        monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
        monkeypatch.setenv("CXR_LUNGS_MODEL", str(SHIPPED_LUNGS_DIR))

    return set_env


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


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the ``cxr`` CLI in-process and return (exit code, stdout, stderr)."""
    from cxr_core.cli.parser import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


def dicom_bytes(
    gray: np.ndarray,
    photometric: str = "MONOCHROME2",
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0042",
    **tags: str,
) -> bytes:
    """A 12-bit DX DICOM of a grayscale image with patient identifiers and any other ``tags`` (e.g. Modality="MR",
    ViewPosition="LL"); MONOCHROME1 stores inverted values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    values = gray.astype(np.uint16) * 16
    if photometric == "MONOCHROME1":
        values = 4095 - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = patient_name, patient_id, "DX"
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = values.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A synthetic 24-image dataset in the Kaggle layout with a manifest (12 patients per class)."""
    return write_dataset(tmp_path / "tiny")


def _free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_using_home(home: Path) -> list[int]:
    """PIDs of processes started with ``CXR_HOME=home``: a test's Streamlit server, queue worker and training runs."""
    target = str(home.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        values = [v[len(b"CXR_HOME=") :].decode(errors="replace") for v in variables if v.startswith(b"CXR_HOME=")]
        if values and values[0] and str(Path(values[0]).resolve()) == target:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_processes_using_home(home: Path, grace: float = 10.0) -> list[int]:
    """SIGTERM (then after ``grace`` seconds SIGKILL) every process of ``home``, so no training outlives its test."""
    pids = processes_using_home(home)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return pids


class StreamlitServers:
    """Starts ``streamlit run app.py`` servers on free localhost ports and stops them and every job they spawned."""

    def __init__(self, tmp_path: Path) -> None:
        """Servers of one test: logs and default work dir under ``tmp_path``."""
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.homes: list[Path] = []
        self.logs: dict[str, Path] = {}

    def __call__(self, env: dict[str, str] | None = None, timeout: float = 90.0) -> str:
        """Start a server with ``env`` added to the environment and return its URL once healthy; fail fast otherwise."""
        port = _free_port()
        full_env = {
            **os.environ,
            "CXR_HOME": str(self.tmp_path / "app-home"),
            "CXR_LUNGS_MODEL": str(SHIPPED_LUNGS_DIR),
            **(env or {}),
        }
        url, log_path = f"http://127.0.0.1:{port}", self.tmp_path / f"streamlit-{port}.log"
        self.logs[url] = log_path
        self.homes.append(Path(full_env["CXR_HOME"]))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    "app.py",
                    "--server.port",
                    str(port),
                    "--server.address",
                    "127.0.0.1",
                    "--server.headless",
                    "true",
                    "--browser.gatherUsageStats",
                    "false",
                    "--server.fileWatcherType",
                    "none",
                ],
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                pytest.fail(
                    f"streamlit exited with code {proc.returncode} before serving:\n{self.log_tail(url)}", pytrace=False
                )
            try:
                with _DIRECT.open(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                pass
            time.sleep(0.25)
        pytest.fail(
            f"streamlit did not answer {url}/_stcore/health within {timeout:.0f} s:\n{self.log_tail(url)}",
            pytrace=False,
        )

    def log_tail(self, url: str, chars: int = 3000) -> str:
        """The end of the server log of ``url``."""
        path = self.logs.get(url)
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else "(no log)"

    def stop(self) -> None:
        """Stop the servers, then the workers and training runs of their work dirs inside the test's tmp dir."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for home in self.homes:
            if home.resolve().is_relative_to(self.tmp_path.resolve()):
                stop_processes_using_home(home)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def streamlit_app(tmp_path: Path) -> Iterator[StreamlitServers]:
    """Call it with extra environment to start the app on a free localhost port and get its URL; stopped by PID."""
    servers = StreamlitServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    """A Playwright page in Debian's headless chromium (never a downloaded browser)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing in CI: .ci/run must apt-get install chromium")
        pytest.skip("BROWSER MISSING: /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.set_default_navigation_timeout(60_000)
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


def settle(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait (bounded) until Streamlit has finished the rerun that the last widget change triggered."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=timeout_ms
    )
