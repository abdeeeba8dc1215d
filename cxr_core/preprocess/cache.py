"""The preprocessing cache: every indexed image resized and normalised once, in parallel, resumable and atomic.

Layout: ``cfg.cache_dir / "preprocessed" / <digest> / <relative path>.png`` with ``config.json`` beside the
images, where ``<digest>`` is :meth:`PreprocessConfig.digest` of the *canonical* config (every parameter
resolved, so ``clahe`` and ``clahe(clip_limit=2.0)`` share one folder). A file that is already a ``.png``
keeps its relative path; any other gets ``.png`` appended (``a/b.jpg`` -> ``a/b.jpg.png``).

Each cached PNG (8-bit gray) carries the SHA-256 of the original file in a ``tEXt`` chunk
(:data:`SOURCE_KEY`): an entry counts as done only if that hash matches the original's, so a changed or
replaced original is preprocessed again and two datasets never see each other's images. Files are written
to ``<root>/.tmp/`` and renamed into place, so a killed run leaves no half-written image; the next run
deletes temporary files of writers that are no longer alive. The originals are only ever read.

The training pipeline reads through :meth:`PreprocessCache.load`, which returns the cached array or
preprocesses the original on the fly (and caches it).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from cxr_core.config import Config
from cxr_core.data.imaging import DecodedImages, ImageReadError, read_image, sha256_file
from cxr_core.preprocess.normalise import resolve_params
from cxr_core.preprocess.recipe import PreprocessConfig, PreprocessError
from cxr_core.preprocess.roi import Segment
from cxr_core.util.atomic import write_json_atomic
from cxr_core.util.processes import pid_alive
from cxr_core.util.progress import Progress

if TYPE_CHECKING:
    from cxr_core.data.index import DatasetIndex

PREPROCESSED_DIR = "preprocessed"
CONFIG_FILE = "config.json"
TMP_DIR = ".tmp"
SOURCE_KEY = "cxr-source-sha256"
MIN_TASKS_PER_WORKER = 8
"""A second thread is only worth starting with at least this many images per thread."""


def canonical(pcfg: PreprocessConfig) -> PreprocessConfig:
    """The same config with every normalisation parameter resolved (defaults filled in, types coerced)."""
    return dataclasses.replace(pcfg, params=resolve_params(pcfg.method, pcfg.param_dict))


def cache_root(cfg: Config, pcfg: PreprocessConfig) -> Path:
    """Folder of the cached images for ``pcfg``: ``cfg.cache_dir/preprocessed/<canonical digest>``."""
    return cfg.cache_dir / PREPROCESSED_DIR / canonical(pcfg).digest()


def cached_name(rel: str) -> str:
    """Relative path of the cached PNG for an original's relative path."""
    return rel if rel.lower().endswith(".png") else f"{rel}.png"


def encode_png(gray: np.ndarray, source_sha256: str) -> bytes:
    """8-bit gray PNG bytes with the original's SHA-256 in a ``tEXt`` chunk after IHDR.

    Huffman-only deflate of the "up" filter: on 299 px X-rays 0.8 ms an image against 1.45 ms with adaptive filters
    (OpenCV 5.0, this machine), for files 8 % larger; both are 2-3x faster than zlib level 1.
    """
    options = [
        cv2.IMWRITE_PNG_COMPRESSION,
        1,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
        cv2.IMWRITE_PNG_FILTER,
        cv2.IMWRITE_PNG_FILTER_UP,
    ]
    ok, buffer = cv2.imencode(".png", gray, options)
    if not ok:
        raise PreprocessError("could not encode a PNG")
    payload = b"tEXt" + SOURCE_KEY.encode("latin-1") + b"\0" + source_sha256.encode("ascii")
    chunk = struct.pack(">I", len(payload) - 4) + payload + struct.pack(">I", zlib.crc32(payload))
    data = buffer.tobytes()
    end_of_ihdr = 8 + 8 + 13 + 4
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


@dataclass
class PreprocessCache:
    """Cached preprocessed images of one dataset folder for one :class:`PreprocessConfig`.

    ``load(rel_path, sha256)`` is what training calls: the ``(size, size)`` uint8 array exactly as
    ``config.apply(read_image(original))`` would give, from the cache when it is fresh.
    """

    cfg: Config
    config: PreprocessConfig
    data_dir: Path
    segment: Segment | None = None
    """Finds the lung mask of an original for a config with a lung ROI (such as ``cxr_core.lungs.lung_mask``)."""
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        """Canonicalise the config and resolve the folders."""
        self.config = canonical(self.config)
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.root = cache_root(self.cfg, self.config)

    def relative(self, path: str | Path) -> str:
        """Posix path relative to the data dir of an image path (relative to it, or absolute) inside it.

        Paths that climb out of the data dir (``../x``) are refused, so a cache entry can never land
        outside the cache folder.
        """
        joined = self.data_dir / Path(path).expanduser()
        for candidate in (Path(os.path.normpath(joined)), joined.resolve()):
            if candidate.is_relative_to(self.data_dir) and candidate != self.data_dir:
                return candidate.relative_to(self.data_dir).as_posix()
        raise PreprocessError(f"{path} is not inside the data dir {self.data_dir}")

    def path_for(self, path: str | Path) -> Path:
        """Where the cached PNG of an image (relative or absolute path) lives."""
        return self.root / cached_name(self.relative(path))

    def prepare(self) -> None:
        """Create the folder and ``config.json``, refuse a cache inside the data dir, remove dead writers' temp files."""
        if self.root.is_relative_to(self.data_dir):
            raise PreprocessError(
                f"the cache {self.root} is inside the data dir {self.data_dir}: set CXR_HOME elsewhere"
            )
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        if not (self.root / CONFIG_FILE).is_file():
            write_json_atomic(
                self.root / CONFIG_FILE, {"digest": self.config.digest(), "preprocess": self.config.to_dict()}
            )
        for tmp in (self.root / TMP_DIR).iterdir():
            pid = tmp.name.split("-", 1)[0]
            if not pid.isdigit() or not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def cached(self, path: str | Path, sha256: str) -> np.ndarray | None:
        """The cached array when it exists and was made from the original with this SHA-256, else None."""
        target = self.path_for(path)
        try:
            with Image.open(target) as image:
                if image.info.get(SOURCE_KEY) != sha256 or image.mode != "L":
                    return None
                pixels = np.asarray(image)
        except (FileNotFoundError, OSError, SyntaxError, ValueError):
            return None
        return pixels if pixels.shape == (self.config.size, self.config.size) else None

    def is_fresh(self, path: str | Path, sha256: str) -> bool:
        """True when the cached PNG exists and records this original's SHA-256 (header only, no decoding)."""
        return self._fresh(self.path_for(path), sha256)

    def _fresh(self, target: Path, sha256: str) -> bool:
        """:meth:`is_fresh` of the cached file ``target``."""
        try:
            with Image.open(target) as image:
                return image.info.get(SOURCE_KEY) == sha256 and image.size == (self.config.size, self.config.size)
        except (FileNotFoundError, OSError, SyntaxError, ValueError):
            return False

    def store(self, path: str | Path, sha256: str, array: np.ndarray) -> Path:
        """Write one preprocessed array atomically (temp file in ``.tmp/``, then rename); needs :meth:`prepare` first."""
        return self._store(self.path_for(path), sha256, array)

    def _store(self, target: Path, sha256: str, array: np.ndarray) -> Path:
        """:meth:`store` into the cached file ``target``."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR / f"{os.getpid()}-{uuid.uuid4().hex}.png"
        try:
            tmp.write_bytes(encode_png(array, sha256))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def compute(self, path: str | Path, source: str | Path | None = None) -> np.ndarray:
        """Preprocess the original (read with the shared reader under the Config's size limits), without caching.

        ``source`` is a file whose pixels stand in for the original's (a repaired copy), read instead of it.
        """
        return self._compute(self.relative(path), source)

    def _compute(self, rel: str, source: str | Path | None = None, pixels: np.ndarray | None = None) -> np.ndarray:
        """:meth:`compute` of the image at ``rel``, a path already checked by :meth:`relative`, from its decoded
        ``pixels`` when the caller has them."""
        if pixels is None:
            path = Path(source) if source else self.data_dir / rel
            pixels = read_image(path, max_pixels=self.cfg.max_pixels, min_side=self.cfg.min_side)
        return self.config.apply(pixels, self.segment)

    def load(self, path: str | Path, sha256: str | None = None, source: str | Path | None = None) -> np.ndarray:
        """The preprocessed ``(size, size)`` uint8 array of an image: cached if fresh, else computed and cached.

        ``path`` is relative to the data dir (as in the index) or absolute inside it; ``sha256`` is the hash of the
        file read (the index's ``sha256``, or ``pixels_sha256`` with ``source``), computed when omitted. ``source`` is
        a file whose pixels stand in for the original's (its repair): the entry is keyed by that file's hash, so a
        repair and a restore each recompute it. Raises :class:`~cxr_core.data.imaging.ImageReadError` for an
        unreadable file.
        """
        rel = self.relative(path)
        try:
            digest = sha256 or sha256_file(Path(source) if source else self.data_dir / rel)
        except OSError as exc:
            raise ImageReadError(f"cannot read file ({exc.strerror})", rel) from exc
        hit = self.cached(rel, digest)
        if hit is not None:
            return hit
        array = self._compute(rel, source)
        if not (self.root / TMP_DIR).is_dir():
            self.prepare()
        self.store(rel, digest, array)
        return array

    def process(
        self, rel: str, sha256: str, source: str = "", pixels: np.ndarray | None = None
    ) -> tuple[str, str, str]:
        """Batch step for one image (read from ``source`` when set, else from ``pixels``, the original's decoded pixels,
        when given): ``(rel, "cached" | "written" | "failed", error)``."""
        inside = self.relative(rel)
        target = self.root / cached_name(inside)
        if self._fresh(target, sha256):
            return rel, "cached", ""
        try:
            self._store(target, sha256, self._compute(inside, source or None, None if source else pixels))
        except (ImageReadError, PreprocessError, OSError) as exc:
            return rel, "failed", str(exc)
        return rel, "written", ""


@dataclass
class PreprocessReport:
    """What a batch run did; ``to_dict()`` is the ``cxr preprocess --json`` object."""

    config: dict[str, Any]
    digest: str
    cache_dir: str
    data_dir: str
    workers: int
    images: int = 0
    written: int = 0
    cached: int = 0
    excluded: int = 0
    excluded_by_reason: dict[str, int] = field(default_factory=dict)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def preprocess_dataset(
    cfg: Config,
    config: PreprocessConfig,
    index: DatasetIndex,
    workers: int | None = None,
    progress: Progress | None = None,
    segment: Segment | None = None,
    decoded: DecodedImages | None = None,
) -> PreprocessReport:
    """Preprocess every readable, non-excluded image of ``index`` into the cache; skips fresh entries.

    Runs up to ``workers`` threads (default ``cfg.workers``), fewer when there are under
    :data:`MIN_TASKS_PER_WORKER` images per worker; one worker runs in this thread. Unreadable files and
    excluded images (curation discards, test duplicates of training images) are counted and reported,
    never processed. ``progress(done, total)`` is called after each image. ``segment`` finds the lungs of each
    original for a config with a lung ROI (such as ``cxr_core.lungs.lung_mask``). ``decoded`` holds originals' pixels
    the index has just decoded (see ``load_index``), used instead of reading those files again.
    """
    started = time.perf_counter()
    cache = PreprocessCache(cfg, config, index.data_dir, segment)
    cache.prepare()
    rows = index.images()
    from cxr_core.data.index import pixel_sources

    tasks = list(zip(rows["path"].astype(str), *pixel_sources(rows)))
    n_workers = max(1, min(int(workers or cfg.workers), -(-len(tasks) // MIN_TASKS_PER_WORKER)))
    report = PreprocessReport(
        config=cache.config.to_dict(),
        digest=cache.config.digest(),
        cache_dir=str(cache.root),
        data_dir=str(index.data_dir),
        workers=n_workers,
        images=len(tasks),
        excluded_by_reason=index.excluded_counts(),
        unreadable=index.unreadable(),
    )
    report.excluded = sum(report.excluded_by_reason.values())
    for done, (rel, status, error) in enumerate(_run(cache, tasks, n_workers, decoded or DecodedImages()), start=1):
        if status == "failed":
            report.failed.append({"path": rel, "error": error})
        elif status == "written":
            report.written += 1
        else:
            report.cached += 1
        if progress is not None:
            progress(done, len(tasks))
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _run(cache: PreprocessCache, tasks: list[tuple[str, str, str]], workers: int, decoded: DecodedImages) -> Any:
    """Yield each task's result, in order, from this thread or from a pool of ``workers`` threads; a task takes the
    pixels of its image from ``decoded`` when they are there.

    Threads, not processes: decoding, OpenCV and scikit-image release the GIL, so on this 2-core machine two threads
    beat two spawned processes for every method (clahe on 421 images: 1.3 s against 1.6 s) and start at once.
    """

    def step(task: tuple[str, str, str]) -> tuple[str, str, str]:
        """Process one task."""
        return cache.process(*task, decoded.take(task[0]))

    if workers == 1:
        yield from map(step, tasks)
        return
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="cxr-preprocess")
    try:
        yield from executor.map(step, tasks)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(opencv_threads)
