"""The preprocessing cache and ``cxr preprocess``: layout, resumability, atomicity, exclusions, parallel runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import write_dataset
from cxr_core.cli.parser import main
from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.curation.ledger import open_ledger
from cxr_core.data.imaging import DecodedImages, ImageReadError, read_image, sha256_file
from cxr_core.preprocess import cache as batch_preprocess
from cxr_core.preprocess.cache import (
    SOURCE_KEY,
    TMP_DIR,
    PreprocessCache,
    cache_root,
    cached_name,
    preprocess_dataset,
)
from cxr_core.preprocess.recipe import PreprocessConfig, PreprocessError

CONFIG = PreprocessConfig("clahe", size=32)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` with its size, mtime and SHA-256."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_cached(path: Path) -> np.ndarray:
    """Pixels of a cached PNG (smaller than the shared reader's minimum side)."""
    with Image.open(path) as image:
        return np.asarray(image)


def cached_pngs(root: Path) -> list[Path]:
    """Final cached images (not temporary files) under a cache root."""
    return sorted(p for p in root.rglob("*.png") if TMP_DIR not in p.parts)


@pytest.fixture
def cfg(make_cfg: Callable[..., Config], tiny_dataset: Path) -> Config:
    """A config whose data dir is the synthetic 24-image dataset."""
    return make_cfg(data_dir=tiny_dataset)


def test_a_run_caches_every_image_as_the_config_would_preprocess_it(cfg: Config) -> None:
    before = snapshot(cfg.data_dir)
    index = curated_index(cfg)
    calls: list[tuple[int, int]] = []
    report = preprocess_dataset(cfg, CONFIG, index, progress=lambda d, t: calls.append((d, t)))
    assert (report.images, report.written, report.cached, report.failed) == (24, 24, 0, [])
    assert calls[-1] == (24, 24) and len(calls) == 24
    root = Path(report.cache_dir)
    assert root == cache_root(cfg, CONFIG) == cfg.cache_dir / "preprocessed" / report.digest
    assert len(cached_pngs(root)) == 24
    for rel, sha in zip(index.images()["path"], index.images()["sha256"]):
        with Image.open(root / rel) as image:
            assert image.info[SOURCE_KEY] == sha
            cached = np.asarray(image)
        np.testing.assert_array_equal(cached, CONFIG.apply(read_image(cfg.data_dir / rel)))
    recorded = json.loads((root / "config.json").read_text())
    assert recorded["digest"] == report.digest
    assert PreprocessConfig.from_dict(recorded["preprocess"]).param_dict == {"clip_limit": 2.0, "tile_grid": 8}
    assert snapshot(cfg.data_dir) == before, "the originals must never be touched"
    assert not any(p.name.startswith(".") for p in cfg.data_dir.rglob("*")), "nothing may be written into the data dir"


def test_a_rerun_skips_finished_files_and_reprocesses_a_changed_original(cfg: Config) -> None:
    index = curated_index(cfg)
    preprocess_dataset(cfg, CONFIG, index)
    root = cache_root(cfg, CONFIG)
    stamps = {p: p.stat().st_mtime_ns for p in cached_pngs(root)}
    again = preprocess_dataset(cfg, CONFIG, curated_index(cfg))
    assert (again.written, again.cached) == (0, 24)
    assert {p: p.stat().st_mtime_ns for p in cached_pngs(root)} == stamps
    changed = cfg.data_dir / "Normal/images/Normal-3.png"
    cv2.imwrite(str(changed), 255 - read_image(changed))
    third = preprocess_dataset(cfg, CONFIG, curated_index(cfg))
    assert (third.written, third.cached) == (1, 23)
    np.testing.assert_array_equal(read_cached(root / "Normal/images/Normal-3.png"), CONFIG.apply(read_image(changed)))


def test_an_interrupted_run_leaves_no_half_written_file_and_resumes(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = curated_index(cfg)
    real_replace = os.replace
    renames: list[str] = []

    def dying_replace(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".png"):
            if len(renames) == 5:
                raise KeyboardInterrupt
            renames.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(batch_preprocess.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(cfg, CONFIG, index)
    monkeypatch.setattr(batch_preprocess.os, "replace", real_replace)
    root = cache_root(cfg, CONFIG)
    assert len(cached_pngs(root)) == 5
    assert all(read_cached(p).shape == (32, 32) for p in cached_pngs(root))
    assert list((root / TMP_DIR).iterdir()) == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = root / TMP_DIR / f"{dead.stdout.strip()}-killed.png"
    stale.write_bytes(b"\x89PNG half")
    resumed = preprocess_dataset(cfg, CONFIG, index)
    assert (resumed.written, resumed.cached) == (19, 5)
    assert not stale.exists(), "temporary files of dead writers are removed"
    assert len(cached_pngs(root)) == 24


def test_discarded_and_unreadable_images_are_reported_not_processed(cfg: Config) -> None:
    (cfg.data_dir / "COVID/images/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    discarded = cfg.data_dir / "COVID/images/COVID-2.png"
    open_ledger(cfg).record(
        sha256_file(discarded), "COVID/images/COVID-2.png", "discard", reason="markings", reviewer="test"
    )
    report = preprocess_dataset(cfg, CONFIG, curated_index(cfg))
    assert report.images == 23 and report.written == 23
    assert report.excluded == 1 and report.excluded_by_reason == {"discarded": 1}
    assert [item["path"] for item in report.unreadable] == ["COVID/images/broken.png"]
    root = Path(report.cache_dir)
    assert not (root / "COVID/images/COVID-2.png").exists() and not (root / "COVID/images/broken.png").exists()


def test_configs_coexist_and_equivalent_spellings_share_one_folder(cfg: Config) -> None:
    explicit = PreprocessConfig("clahe", {"clip_limit": 2, "tile_grid": 8}, size=32)
    assert cache_root(cfg, explicit) == cache_root(cfg, CONFIG)
    gamma = PreprocessConfig("gamma", {"gamma": 0.6}, size=32)
    assert cache_root(cfg, gamma) != cache_root(cfg, CONFIG)
    index = curated_index(cfg)
    preprocess_dataset(cfg, CONFIG, index)
    assert preprocess_dataset(cfg, explicit, index).cached == 24
    assert preprocess_dataset(cfg, gamma, index).written == 24
    assert len(list((cfg.cache_dir / "preprocessed").iterdir())) == 2


def test_a_cache_inside_the_data_dir_is_refused(make_cfg: Callable[..., Config], tiny_dataset: Path) -> None:
    cfg = make_cfg(data_dir=tiny_dataset, home=tiny_dataset / ".cxr")
    with pytest.raises(PreprocessError, match="inside the data dir"):
        preprocess_dataset(cfg, CONFIG, curated_index(cfg))


def test_load_serves_the_cache_or_preprocesses_on_the_fly(cfg: Config) -> None:
    cache = PreprocessCache(cfg, CONFIG, cfg.data_dir)
    rel = "COVID/images/COVID-1.png"
    expected = CONFIG.apply(read_image(cfg.data_dir / rel))
    np.testing.assert_array_equal(cache.load(rel), expected)
    assert cache.path_for(rel).is_file() and (cache.root / "config.json").is_file()
    cache.path_for(rel).write_bytes(
        batch_preprocess.encode_png(np.zeros((32, 32), np.uint8), sha256_file(cfg.data_dir / rel))
    )
    assert cache.load(cfg.data_dir / rel).max() == 0, "a fresh cache entry is served without recomputing"
    assert cache.load(rel, sha256="0" * 64).max() > 0, "an entry made from another original is recomputed"
    for outside in (Path("/etc/hostname"), "../elsewhere.png", "COVID/../../x.png"):
        with pytest.raises(PreprocessError, match="not inside the data dir"):
            cache.load(outside)
    assert cache.relative(cfg.data_dir / "COVID/./images/../images/COVID-1.png") == rel
    with pytest.raises(ImageReadError):
        cache.load("COVID/images/missing.png", sha256="0" * 64)


def test_cached_names_keep_png_paths_and_append_png_to_others() -> None:
    assert cached_name("COVID/images/a.png") == "COVID/images/a.png"
    assert cached_name("Normal/b.JPG") == "Normal/b.JPG.png"
    assert cached_name("x/c.dcm") == "x/c.dcm.png"


def test_two_workers_give_the_same_files_as_one(make_cfg: Callable[..., Config], tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "forty", n_per_class=20, size=64)
    one = make_cfg(data_dir=data, home=tmp_path / "one")
    two = make_cfg(data_dir=data, home=tmp_path / "two")
    first = preprocess_dataset(one, CONFIG, curated_index(one), workers=1)
    second = preprocess_dataset(two, CONFIG, curated_index(two), workers=2)
    assert second.workers == 2 and second.written == first.written == 40
    a, b = Path(first.cache_dir), Path(second.cache_dir)
    assert [p.relative_to(a) for p in cached_pngs(a)] == [p.relative_to(b) for p in cached_pngs(b)]
    for p in cached_pngs(a):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()


def test_the_index_hands_its_decoded_pixels_over_so_no_original_is_read_twice(
    make_cfg: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dataset(tmp_path / "many", n_per_class=64, size=64)
    plain = make_cfg(data_dir=data, home=tmp_path / "plain", workers=2)
    handed = make_cfg(data_dir=data, home=tmp_path / "handed", workers=2)
    first = preprocess_dataset(plain, CONFIG, curated_index(plain), workers=2)
    decoded = DecodedImages()
    index = curated_index(handed, decoded=decoded)
    assert sorted(decoded.pixels) == sorted(index.frame["path"])
    for rel, pixels in decoded.pixels.items():
        np.testing.assert_array_equal(pixels, read_image(data / rel))

    def no_reading(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("an original was read again")

    monkeypatch.setattr(batch_preprocess, "read_image", no_reading)
    second = preprocess_dataset(handed, CONFIG, index, workers=2, decoded=decoded)
    assert second.written == first.written == 128 and not second.failed and not decoded.pixels
    a, b = Path(first.cache_dir), Path(second.cache_dir)
    for p in cached_pngs(a):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    unchanged = DecodedImages()
    curated_index(handed, decoded=unchanged)
    assert not unchanged.pixels, "rows reused from the cached index decode nothing"


def test_a_replacement_file_wins_over_the_originals_decoded_pixels(cfg: Config, tmp_path: Path) -> None:
    rel = "COVID/images/COVID-1.png"
    original = read_image(cfg.data_dir / rel)
    replacement = tmp_path / "repaired.png"
    cv2.imwrite(str(replacement), 255 - original)
    cache = PreprocessCache(cfg, CONFIG, cfg.data_dir)
    cache.prepare()
    assert cache.process(rel, "0" * 64, str(replacement), original)[1] == "written"
    np.testing.assert_array_equal(read_cached(cache.path_for(rel)), CONFIG.apply(255 - original))


def test_cli_prints_one_json_object(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CXR_HOME", str(cfg.home))
    argv = ["preprocess", str(cfg.data_dir), "--method", "gamma", "--param", "gamma=0.7", "--size", "48"]
    argv += ["--resize", "pad"]
    code = main([*argv, "--workers", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["written"] == 24 and out["workers"] == 1
    assert out["config"] == {
        "method": "gamma",
        "params": {"gamma": 0.7},
        "size": 48,
        "resize": "pad",
        "interpolation": "area",
        "roi": "none",
    }
    assert main(argv) == 0
    assert "0 written, 24 already cached" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "clip=3"], "takes no parameter"),
        (["--param", "clip_limit"], "key=value"),
        (["--size", "4"], "size must be"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_cli_errors_are_one_line(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    monkeypatch.setenv("CXR_HOME", str(cfg.home))
    assert main(["preprocess", str(cfg.data_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (cfg.cache_dir / "preprocessed").exists()


def test_cli_refuses_a_missing_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    assert main(["preprocess", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_fills_the_cache_of_a_lung_roi_recipe_as_training_reads_it(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--roi lung_mask --lung-standardise zscore`` segments the lungs like training, so training finds it cached."""
    from conftest import SHIPPED_LUNGS_DIR
    from cxr_core.lungs.segmenter import lung_mask
    from cxr_core.train.pipeline import load_arrays

    monkeypatch.setenv("CXR_HOME", str(cfg.home))
    monkeypatch.setenv("CXR_LUNGS_MODEL", str(SHIPPED_LUNGS_DIR))
    argv = ["preprocess", str(cfg.data_dir), "--size", "48", "--roi", "lung_mask", "--lung-standardise", "zscore"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == 24 and out["config"]["roi"] == "lung_mask"
    recipe = PreprocessConfig(size=48, roi="lung_mask", lung_standardise="zscore")
    rows = curated_index(cfg).images().head(3)
    cached = load_arrays(rows, cfg.data_dir, recipe, cfg=cfg)
    fresh = [recipe.apply(read_image(cfg.data_dir / p), lung_mask) for p in rows["path"]]
    np.testing.assert_array_equal(cached, np.stack(fresh))
    assert main(argv) == 0 and "0 written, 24 already cached" in capsys.readouterr().out
    assert main(["preprocess", str(cfg.data_dir), "--lung-standardise", "zscore"]) == 2
    assert "lung" in capsys.readouterr().err
