"""AppTest of the Training, Run history and Evaluation pages (form validation, simulated runs, a trained model)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, write_dataset
from cxr_core import jobs
from cxr_core.config import load_config

METRICS_HEADER = "epoch,loss,accuracy,auc,val_loss,val_accuracy,val_auc,lr,seconds\n"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A synthetic 32-image dataset and private work/model dirs, set through the environment."""
    data = write_dataset(tmp_path / "data", n_per_class=16, size=64)
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def page(name: str) -> AppTest:
    """An AppTest of one page file."""
    return AppTest.from_file(str(REPO / "pages" / name), default_timeout=120)


def fake_run(home: Path, run_id: str, status: str, epochs_done: int, **extra: object) -> Path:
    """A run directory written by hand following the contract (status.json, config.json, metrics.csv)."""
    run = home / "runs" / run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"arch": "cxr_net", "epochs": 3, "size": 64, "lr": 0.002,
                                                           "batch": 8, "method": "clahe"}}))
    rows = "".join(f"{e},{1 / e},0.7,0.8,{1.2 / e},0.65,{0.6 + e / 20},0.002,4.0\n" for e in range(1, epochs_done + 1))
    (run / "metrics.csv").write_text(METRICS_HEADER + rows)
    (run / "batches.csv").write_text("epoch,batch,step,loss,accuracy\n1,1,1,0.9,0.5\n1,2,2,0.8,0.6\n")
    (run / "train.log").write_text("line one\nepoch 1 done\n")
    base = {"status": status, "pid": os.getpid(), "created": "2026-11-28T01:00:00+00:00",
            "started": "2026-11-28T01:00:01+00:00", "updated": jobs.utc_now(), "epoch": epochs_done, "epochs": 3,
            "batch": 2, "batches_per_epoch": 4, "best_val_auc": 0.6 + epochs_done / 20, "best_epoch": epochs_done}
    (run / "status.json").write_text(json.dumps({**base, **extra}))
    return run


def click(at: AppTest, label: str) -> AppTest:
    """Click the button with this label and rerun."""
    next(b for b in at.button if b.label == label).click()
    return at.run()


def test_training_form_refuses_negative_lr_and_zero_epochs(env: Path) -> None:
    """The form shows the parameter count; a negative learning rate or zero epochs is refused, nothing launched."""
    at = page("4_Training.py").run()
    assert not at.exception
    assert any(m.label == "Parameters" and m.value not in ("n/a", "") for m in at.metric)
    assert any("0 excluded" in m.value for m in at.markdown)
    at.number_input(key="size-cxr_net").set_value(64)
    click(at, "Measure time per epoch")
    estimate = next(m.value for m in at.metric if m.label == "Estimated time per epoch")
    assert estimate.endswith("min") and estimate != "not measured"
    at.number_input(key="lr-cxr_net").set_value(-0.01)
    click(at, "Launch training")
    assert any("learning rate" in e.value for e in at.error)
    at.number_input(key="lr-cxr_net").set_value(0.002)
    next(n for n in at.number_input if n.label == "Epochs").set_value(0)
    click(at, "Launch training")
    assert any("epochs" in e.value for e in at.error)
    assert not (env / "home" / "runs").exists() or not any((env / "home" / "runs").iterdir())


def test_training_live_view_of_a_running_run(env: Path) -> None:
    """A running run shows its status, progress, curves, best checkpoint, log and a Cancel button."""
    fake_run(env / "home", "20261128-010000-cxr_net-abcd", "running", 2)
    at = page("4_Training.py").run()
    assert not at.exception
    assert any("running" in m.value for m in at.markdown)
    assert any("Best checkpoint: epoch **2**" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) >= 2
    assert any("epoch 2/3" in p.proto.text for p in at.get("progress"))
    click(at, "Cancel run")
    assert (env / "home" / "runs" / "20261128-010000-cxr_net-abcd" / "cancel.request").exists()


def test_dead_run_shows_interrupted_with_resume(env: Path) -> None:
    """A running status whose pid is gone reads as interrupted with a Resume button; a failed run shows its traceback."""
    fake_run(env / "home", "20261128-010000-cxr_net-dead", "running", 1, pid=2**22 + 12345)
    fake_run(env / "home", "20261128-020000-cxr_net-fail", "failed", 1, error="Traceback ...\nValueError: boom")
    at = page("4_Training.py").run()
    next(s for s in at.selectbox if s.label == "Run").set_value("20261128-010000-cxr_net-dead")
    at.run()
    assert not at.exception
    assert any("interrupted" in m.value for m in at.markdown)
    assert any(b.label == "Resume run" for b in at.button)
    next(s for s in at.selectbox if s.label == "Run").set_value("20261128-020000-cxr_net-fail")
    at.run()
    assert any("ValueError: boom" in c.value for c in at.code)


def test_run_history_table_overlay_and_delete_to_trash(env: Path) -> None:
    """The table lists runs with status and best AUC; delete asks first and then moves the run to the trash."""
    fake_run(env / "home", "20261128-010000-cxr_net-aaaa", "done", 3)
    fake_run(env / "home", "20261128-020000-cxr_net-bbbb", "cancelled", 1)
    at = page("5_Run_history.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["20261128-020000-cxr_net-bbbb", "20261128-010000-cxr_net-aaaa"]
    assert list(table["status"]) == ["cancelled", "done"] and table["best val AUC"].iloc[1] == pytest.approx(0.75)
    assert len(at.get("plotly_chart")) >= 2
    click(at, "Delete run…")
    assert any("trash" in w.value for w in at.warning)
    click(at, "Yes, move to trash")
    assert not at.exception
    cfg = load_config()
    assert not (cfg.runs_dir / "20261128-020000-cxr_net-bbbb").exists()
    assert any(p.name.startswith("run-20261128-020000-cxr_net-bbbb") for p in cfg.trash_dir.iterdir())


def test_pages_without_runs_or_models(env: Path) -> None:
    """Run history and Evaluation explain what to do when there is nothing yet."""
    at = page("5_Run_history.py").run()
    assert not at.exception and any("No training runs" in i.value for i in at.info)
    at = page("6_Evaluation.py").run()
    assert not at.exception and any("No registered models" in i.value for i in at.info)


@pytest.mark.slow
def test_promote_and_evaluate_a_trained_model(env: Path, trained_run: Callable[[Path], Path]) -> None:
    """Promote a finished run from Run history, then the Evaluation page shows metrics, slider, figures and card."""
    run = trained_run(env)
    at = page("5_Run_history.py").run()
    assert not at.exception
    next(t for t in at.text_input if t.label == "Model name").set_value("tiny")
    at.checkbox(key=f"default-{run.name}").check()
    click(at, "Promote")
    assert any("Registered as `tiny`" in s.value for s in at.success), [e.value for e in at.error]
    at = page("6_Evaluation.py").run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == "tiny"
    table = at.dataframe[0].value if "metric" in at.dataframe[0].value else at.dataframe[1].value
    assert "roc_auc" in list(table["metric"])
    before = {m.label: m.value for m in at.metric}
    at.slider[0].set_value(0.99).run()
    after = {m.label: m.value for m in at.metric}
    assert after["Sensitivity"] != before["Sensitivity"] or after["Specificity"] != before["Specificity"]
    assert len(at.get("plotly_chart")) >= 4
    assert any("Model card" in s.value for s in at.subheader)
    assert any("not been audited" in i.value for i in at.info)
    audit = {"verdict_level": "shortcut", "verdict": "It is using shortcuts outside the lungs.", "auc": 0.9,
             "auc_lungs_blanked": 0.85, "auc_lungs_only": 0.6, "lung_attention_mean": 0.3, "stats_baseline_auc": 0.88}
    (env / "models" / "tiny" / "audit.json").write_text(json.dumps(audit))
    at.run()
    assert any("Verdict: shortcut" in e.value and "outside the lungs" in e.value for e in at.error)
    external = write_dataset(env / "external", n_per_class=6, size=64, seed=7)
    at.radio[0].set_value("another dataset folder").run()
    next(t for t in at.text_input if t.label.startswith("Dataset folder")).set_value(str(external)).run()
    assert not at.exception, at.exception
    assert any("external [all]" in s.value for s in at.subheader), [s.value for s in at.subheader]
    assert any("n = 12 images" in m.value for m in at.markdown)
    history = page("5_Run_history.py").run()
    assert not history.exception and history.dataframe[0].value["test AUC"].notna().all()


@pytest.fixture
def trained_run() -> Callable[[Path], Path]:
    """Train a real tiny run (64 px, 32 images, 1 epoch) through the job runner and return its run directory."""

    def train(tmp: Path) -> Path:
        """Launch, wait for the end, and insist on ``done``."""
        cfg = load_config()
        run = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 1, "size": 64, "batch": 8, "method": "none"},
                          jobs.JobOptions(poll_seconds=0.5))
        deadline = time.monotonic() + 400
        while jobs.read_status(run)["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(1)
        assert jobs.read_status(run)["status"] == "done", jobs.log_tail(run, 30)
        return run

    return train


POINTS_JS = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullData) { return 0; }
  const lengths = plot._fullData.map(t => Number(t._length ?? (t.x && t.x.length) ?? 0)).filter(n => !isNaN(n));
  return lengths.length ? Math.max(...lengths) : 0;
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_train_watch_promote_evaluate_in_chromium(streamlit_app, browser_page, tmp_path: Path) -> None:
    """Launch a tiny run from the Training page, watch the curve grow without reloading, promote it, evaluate it."""
    data = write_dataset(tmp_path / "data", n_per_class=16, size=64)
    url = streamlit_app({"CXR_DATA_DIR": str(data), "CXR_HOME": str(tmp_path / "home"),
                         "CXR_MODELS_DIR": str(tmp_path / "models")})
    page = browser_page
    page.goto(f"{url}/Training")
    page.get_by_text("New run").wait_for(timeout=120_000)
    for label, value in (("Image size (px)", "64"), ("Epochs", "6"), ("Batch size", "4")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(1500)
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("launched").wait_for(timeout=60_000)
    page.evaluate("() => { window.__not_reloaded = true; }")
    seen: list[int] = []
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and len({p for p in seen if p > 0}) < 2:
        seen.append(int(page.evaluate(POINTS_JS)))
        page.wait_for_timeout(500)
    growing = sorted(set(p for p in seen if p > 0))
    assert len(growing) >= 2, f"the curve did not gain points live: {growing}"
    assert page.evaluate("() => window.__not_reloaded === true")
    running_in_old_tab = page.get_by_text("🟢 running").count() > 0
    fresh = page.context.new_page()
    page.close()
    page = fresh
    page.goto(f"{url}/Training")
    page.get_by_text("✅ done").wait_for(timeout=400_000)
    page.wait_for_timeout(4000)
    assert int(page.evaluate(POINTS_JS)) == 6, "the reopened tab does not show all six epochs"
    page.get_by_role("link", name="Run history").click()
    page.get_by_label("Model name").wait_for(timeout=60_000)
    page.get_by_label("Model name").fill("browser-tiny")
    page.get_by_label("Model name").press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Promote").click()
    page.get_by_text("Registered as").wait_for(timeout=60_000)
    page.get_by_role("link", name="Evaluation").first.click()
    page.get_by_text("Metrics on").wait_for(timeout=180_000)
    assert page.get_by_text("browser-tiny").first.is_visible()
    page.get_by_text("Model card").first.wait_for(timeout=180_000)
    assert page.locator(".js-plotly-plot").count() >= 3
    print(f"curve points seen while training: {growing}; still running when the tab closed: {running_in_old_tab}")


def test_figure_builders_and_worst_errors() -> None:
    """Curves overlay one colour per run; worst errors are the most confident mistakes at the threshold."""
    import pandas as pd

    from cxr_core import evaluation_view as ev
    from cxr_core import figures

    metrics = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.6, 0.8],
                            "val_accuracy": [0.5, 0.7], "auc": [0.6, 0.9], "val_auc": [0.55, 0.8]})
    fig = figures.epoch_curves({"a": metrics, "b": metrics.head(1)})
    assert len(fig.data) == 12 and {t.line.color for t in fig.data if t.name.startswith("a")} != {
        t.line.color for t in fig.data if t.name.startswith("b")}
    assert len(figures.batch_loss_curve(pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 0.8, 0.7]})).data) == 2
    assert len(figures.epoch_curves({"empty": pd.DataFrame()}).data) == 0
    cases = pd.DataFrame({"y": [0, 0, 0, 1, 1, 1], "p": [0.95, 0.6, 0.1, 0.05, 0.4, 0.9],
                          "path": list("abcdef"), "label": ["Normal"] * 3 + ["COVID"] * 3, "source": ["s"] * 6})
    worst = ev.worst_errors(cases, 0.5, k=4)
    assert list(worst["false positives"]["path"]) == ["a", "b"] and list(worst["false negatives"]["path"]) == ["d", "e"]
    live = ev.at_threshold(cases, 0.5)
    assert live["sensitivity"] == pytest.approx(1 / 3) and live["specificity"] == pytest.approx(1 / 3)
    assert live["confusion"] == {"tp": 1, "fp": 2, "tn": 1, "fn": 2}
