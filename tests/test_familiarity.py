"""Familiarity: distances grow for a shifted domain, the threshold keeps its false-alarm rate, files round-trip and
are tied to the model version; coverage and risk-coverage curves; ``cxr familiarity`` on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_xray, write_dataset
from cxr_core.cli.parser import main
from cxr_core.evaluate.coverage import coverage_report, risk_coverage
from cxr_core.gate import Gate, familiarity
from cxr_core.gate.acquisition import NAMES as ACQUISITION_NAMES
from cxr_core.gate.acquisition import acquisition_batch, acquisition_features
from cxr_core.serve.registry import RegistryError, load_model
from tiny_models import make_model_dir


def gaussian_domain(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, list[str], list[str]]:
    """Features of two classes from two sources each, moved by ``shift`` away from both (alternating signs per axis)."""
    labels = ["COVID"] * (n // 2) + ["Normal"] * (n - n // 2)
    centres = {"COVID": 1.0, "Normal": -1.0}
    x = np.stack([rng.normal(centres[c], 1.0, 16) for c in labels]) + shift * np.resize([1.0, -1.0], 16)
    return x, labels, [f"{c}-src{i % 2}" for i, c in enumerate(labels)]


@pytest.mark.parametrize("method", familiarity.METHODS)
def test_a_shifted_domain_scores_higher_than_in_distribution(method) -> None:
    rng = np.random.default_rng(0)
    train, labels, sources = gaussian_domain(rng, 400)
    fam = familiarity.calibrate(familiarity.fit(train, labels, sources, method), gaussian_domain(rng, 200)[0], 0.05)
    inside = fam.scores(gaussian_domain(rng, 300)[0])
    shifted = fam.scores(gaussian_domain(rng, 300, shift=2.5)[0])
    assert np.median(shifted) > 1.0 > np.median(inside)
    assert 0.01 < float((inside > 1).mean()) < 0.12
    verdicts = fam.assess(gaussian_domain(rng, 2, shift=6.0)[0])
    assert all(set(v) == {"score", "familiar", "nearest_source"} and v["familiar"] is False for v in verdicts)
    assert all(v["nearest_source"] in sources for v in verdicts)


def test_nearest_source_is_the_source_the_image_comes_from() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (100, 8)), rng.normal(6, 1, (100, 8))
    fam = familiarity.fit(np.r_[a, b], ["COVID"] * 100 + ["Normal"] * 100, ["far"] * 100 + ["near"] * 100)
    assert [v["nearest_source"] for v in fam.assess(np.r_[a[:3], b[:3]])] == ["far"] * 3 + ["near"] * 3


def test_fit_refuses_unknown_methods_and_bad_shapes() -> None:
    with pytest.raises(familiarity.FamiliarityError, match="unknown familiarity method"):
        familiarity.fit(np.zeros((4, 2)), ["a"] * 4, ["s"] * 4, "autoencoder")
    with pytest.raises(familiarity.FamiliarityError, match="at least 2"):
        familiarity.fit(np.zeros((3, 2)), ["a"] * 2, ["s"] * 3)


def test_acquisition_features_describe_how_a_film_was_made() -> None:
    rng = np.random.default_rng(5)
    films = [synthetic_xray(rng, 96, covid=i % 2 == 0) for i in range(60)]
    x = acquisition_batch(films)
    assert x.shape == (60, len(ACQUISITION_NAMES)) and np.isfinite(x).all()
    np.testing.assert_allclose(acquisition_features(films[0]), x[0])
    labels, sources = ["COVID", "Normal"] * 20, ["a", "b"] * 20
    fam = familiarity.calibrate(familiarity.fit(x[:40], labels, sources, "acquisition_knn"), x[40:50], 0.1)
    inside = fam.scores(x[50:])
    other = [np.clip(f * 0.5 + 100 + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in films[50:]]
    assert np.median(fam.scores(acquisition_batch(other))) > 1.0 > np.median(inside)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model directory."""
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_model_features_come_with_the_same_probabilities(model_dir) -> None:
    model = load_model(model_dir)
    batch = model.prepare([synthetic_xray(np.random.default_rng(i), 64) for i in range(3)])
    for kind in ("penultimate", "style"):
        features, probs = model.features_and_probs(batch, kind)
        assert features.shape[0] == 3 and features.shape[1] > 1 and np.isfinite(features).all()
        np.testing.assert_allclose(probs, model.predict_batch(batch), atol=1e-5)
    with pytest.raises(RegistryError, match="unknown feature kind"):
        model.features_and_probs(batch, "pixels")


def test_fitted_familiarity_is_stored_with_the_model_and_tied_to_its_version(model_dir, tmp_path) -> None:
    model = load_model(model_dir)
    rng = np.random.default_rng(2)
    kind = familiarity.FEATURES[familiarity.DEFAULT_METHOD]
    features = familiarity.image_features(model, kind, [synthetic_xray(rng, 64, covid=i % 2 == 0) for i in range(24)])
    import pandas as pd

    rows = pd.DataFrame({"label": ["COVID", "Normal"] * 8, "source": ["a", "b", "c", "d"] * 4})
    familiarity.fit_model(model, features[:16], rows, features[16:])
    reloaded = load_model(model_dir)
    assert reloaded.familiarity is not None and reloaded.familiarity.threshold == pytest.approx(
        model.familiarity.threshold
    )
    assert reloaded.familiarity.features == kind
    shifted = familiarity.image_features(reloaded, kind, [255 - synthetic_xray(rng, 64) for _ in range(8)])
    inside = familiarity.image_features(reloaded, kind, [synthetic_xray(rng, 64, covid=i % 2 == 0) for i in range(8)])
    assert np.median(reloaded.familiarity.scores(shifted)) > np.median(reloaded.familiarity.scores(inside))
    meta = json.loads((model_dir / familiarity.FAMILIARITY_JSON).read_text())
    assert meta["model_version"] == model.version and meta["n_train"] == 16
    assert familiarity.load(model_dir, "another-version") is None
    (model_dir / familiarity.FAMILIARITY_NPZ).write_bytes(b"broken")
    with pytest.raises(RegistryError, match="unreadable familiarity"):
        load_model(model_dir)
    (model_dir / familiarity.FAMILIARITY_NPZ).unlink()
    assert load_model(model_dir).familiarity is None


@pytest.mark.parametrize("method", ["knn", "acquisition_knn"])
def test_cxr_familiarity_fits_on_the_dataset_split(method, tmp_path, capsys, monkeypatch) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=20, size=64)
    model = make_model_dir(tmp_path / "models" / "tiny")
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    assert main(["familiarity", "--model", str(model), "--data", str(data), "--method", method, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == method and summary["n_train"] > 0 and summary["n_val"] > 0
    assert summary["features"] == familiarity.FEATURES[method]
    assert load_model(model).familiarity.method == method
    assert main(["familiarity", "--model", str(model), "--data", str(data), "--false-alarm", "1.5"]) == 2
    assert "--false-alarm" in capsys.readouterr().err


def test_risk_coverage_abstains_in_order_and_ends_on_the_hardest() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.8])
    curve = risk_coverage(y, p, 0.5, abstain_first=np.array([0.0, 3.0, 0.0, 2.0]), max_points=10)
    assert curve["coverage"] == [1.0, 0.75, 0.5, 0.25]
    assert curve["risk"] == [0.5, 0.3333, 0.0, 0.0]


def test_coverage_counts_gate_and_familiarity_and_scores_the_rest() -> None:
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.1, 0.2, 0.7, 0.8])
    gates = [Gate(True, 0.9)] * 4 + [Gate(False, 0.1, ("This does not look like a frontal chest X-ray",), "other")]
    report = coverage_report(y, p, 0.5, gates, np.array([0.5, 0.5, 0.5, 2.0, 0.5]))
    assert (report["gate_passed"], report["familiar"], report["covered"]) == (4, 3, 3)
    assert report["gate_reasons"] == {"This does not look like a frontal chest X-ray": 1}
    assert report["on_covered"]["sensitivity"] == 0.5 and report["on_covered"]["specificity"] == 1.0
    assert report["risk_coverage"]["least_familiar_first"]["coverage"][0] == 1.0
    assert coverage_report(y, p, 0.5, gates, None)["familiar"] is None
