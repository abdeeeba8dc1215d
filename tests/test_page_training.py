"""AppTest of the Training, Run history and Evaluation pages (form validation, simulated runs, a trained model)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from streamlit.testing.v1 import AppTest

from conftest import REPO, settle, stop_processes_using_home, write_dataset
from cxr_core.config import load_config
from cxr_core.train import jobs
from cxr_core.util.atomic import read_json_object

METRICS_HEADER = "epoch,loss,accuracy,auc,val_loss,val_accuracy,val_auc,lr,seconds\n"
START_SECONDS = 180  # a launched run must leave the queue within this
TRAIN_SECONDS = 420  # a tiny run must finish within this, even on a loaded machine
PAGE_MS = 120_000  # a page or a widget rerun must render within this
BROWSER_EPOCHS = 8  # enough epochs for the 3 s live refresh to catch the curve growing


@pytest.fixture
def env(app_env: Callable[[Path], None], tmp_path: Path) -> Path:
    """A synthetic 32-image dataset and private work/model dirs, set through the environment."""
    app_env(write_dataset(tmp_path / "data", n_per_class=16, size=64))
    return tmp_path


def page(name: str) -> AppTest:
    """An AppTest of one page file."""
    return AppTest.from_file(str(REPO / "pages" / name), default_timeout=120)


def fake_run(home: Path, run_id: str, status: str, epochs_done: int, **extra: object) -> Path:
    """A run directory written by hand following the contract (status.json, config.json, metrics.csv)."""
    run = home / "runs" / run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"train": {"arch": "cxr_net", "epochs": 3, "size": 64, "lr": 0.002, "batch": 8, "method": "clahe"}})
    )
    rows = "".join(f"{e},{1 / e},0.7,0.8,{1.2 / e},0.65,{0.6 + e / 20},0.002,4.0\n" for e in range(1, epochs_done + 1))
    (run / "metrics.csv").write_text(METRICS_HEADER + rows)
    (run / "batches.csv").write_text("epoch,batch,step,loss,accuracy\n1,1,1,0.9,0.5\n1,2,2,0.8,0.6\n")
    (run / "train.log").write_text("line one\nepoch 1 done\n")
    base = {
        "status": status,
        "pid": os.getpid(),
        "created": "2026-11-28T01:00:00+00:00",
        "started": "2026-11-28T01:00:01+00:00",
        "updated": jobs.utc_now(),
        "epoch": epochs_done,
        "epochs": 3,
        "batch": 2,
        "batches_per_epoch": 4,
        "best_val_auc": 0.6 + epochs_done / 20,
        "best_epoch": epochs_done,
    }
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
    labels = {w.label for kind in (at.selectbox, at.toggle, at.text_input) for w in kind}
    assert {"Region of interest", "Distribution strategy", "Pre-trained weights", "EMA of weights"} <= labels
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


def test_every_training_option_is_on_the_cli_and_the_page(env: Path) -> None:
    """Each TrainConfig option spec is a ``cxr train`` flag, and each page option a widget with its label."""
    from cxr_core.cli.commands.train import config_from_args
    from cxr_core.cli.parser import build_parser
    from cxr_core.train.config import TrainConfig, train_options

    sub = next(a for a in build_parser()._actions if a.dest == "command")  # noqa: SLF001 - argparse has no public API
    flags = {opt for action in sub.choices["train"]._actions for opt in action.option_strings}  # noqa: SLF001 - as above
    specs = train_options()
    assert {spec.flag for spec in specs} <= flags
    assert config_from_args(build_parser().parse_args(["train"])) == TrainConfig()
    at = page("4_Training.py").run()
    assert not at.exception
    kinds = (at.selectbox, at.toggle, at.text_input, at.number_input)
    labels = {w.label for kind in kinds for w in kind}
    on_page = {spec.option.label for spec in specs if spec.option.on_page and spec.name != "method_params"}
    assert on_page <= labels, on_page - labels
    assert "clahe: clip_limit" in labels


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
    card_file = env / "models" / "tiny" / "card.json"
    loso = {
        "method": "Retrained per held-out source.",
        "sources": {"nih": {"n": 9, "accuracy": 0.25, "specificity": 0.25}, "jsrt": {"n": 5, "accuracy": 1.0}},
        "pooled": {"n": 14, "accuracy": 0.5, "roc_auc": 0.61},
    }
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), "leave_one_source_out": loso}))
    at = page("6_Evaluation.py").run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == "tiny"
    assert at.subheader[0].value == "A new hospital: leave-one-source-out"
    headline = {m.label: m.value for m in at.metric}
    assert headline["Worst held-out source"] == "0.25" and headline["Pooled held-out ROC AUC"] == "0.61"
    table = at.dataframe[0].value if "metric" in at.dataframe[0].value else at.dataframe[1].value
    assert "roc_auc" in list(table["metric"])
    assert set({m.label: m.value for m in at.metric}) >= {"Sensitivity", "Specificity"}
    shown = {m.label: m.value for m in at.metric}
    assert any("Coverage" in s.value for s in at.subheader)
    assert shown["Pass the chest X-ray gate"].split(" / ")[0] == shown["Pass the chest X-ray gate"].split(" / ")[1]
    assert "/" in shown["Also familiar to the model"], "a trained run carries its familiarity fit"
    at.slider[0].set_value(0.0).run()
    everything_covid = {m.label: m.value for m in at.metric}
    assert (everything_covid["Sensitivity"], everything_covid["Specificity"]) == ("1.000", "0.000")
    assert len(at.get("plotly_chart")) >= 4
    assert any("Model card" in s.value for s in at.subheader)
    assert any("not been audited" in i.value for i in at.info)
    audit = {
        "verdict_level": "shortcut",
        "verdict": "It is using shortcuts outside the lungs.",
        "auc": 0.9,
        "auc_lungs_blanked": 0.85,
        "auc_lungs_only": 0.6,
        "lung_attention_mean": 0.3,
        "stats_baseline_auc": 0.88,
    }
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


def describe_run(run: Path) -> str:
    """What the job runner knows about a run: its status and job state, then the ends of the worker and run logs."""
    status, job = jobs.effective_status(run), read_json_object(run / "job.json")
    worker_log = run.parents[1] / "jobs" / "worker.log"
    worker = worker_log.read_text(errors="replace")[-1500:] if worker_log.exists() else "(no worker log)"
    return (
        f"run {run.name}: status {status['status']} {status.get('note', '')}, job state {job.get('state')}, "
        f"epoch {status.get('epoch')}/{status.get('epochs')}\n--- worker.log ---\n{worker}\n"
        f"--- train.log ---\n{jobs.log_tail(run, 30)}"
    )


def wait_for_run(run: Path, seconds: float, until: frozenset[str] = jobs.TERMINAL) -> str:
    """Poll the run's status until it is one of ``until``; fail with the runner's state after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (status := jobs.effective_status(run)["status"]) not in until:
        if time.monotonic() > deadline:
            pytest.fail(
                f"run still {status} after {seconds:.0f} s (waiting for {sorted(until)})\n{describe_run(run)}",
                pytrace=False,
            )
        time.sleep(0.5)
    return status


@pytest.fixture
def trained_run() -> Iterator[Callable[[Path], Path]]:
    """Train a real tiny run (64 px, 32 images, 1 epoch) through the job runner and return its run directory."""
    homes: list[Path] = []

    def train(tmp: Path) -> Path:
        """Launch, wait for the end (bounded), and insist on ``done``."""
        cfg = load_config()
        homes.append(cfg.home)
        run = jobs.launch(
            cfg,
            {"arch": "cxr_net", "epochs": 1, "size": 64, "batch": 8, "method": "none"},
            jobs.JobOptions(poll_seconds=0.5),
        )
        wait_for_run(run, START_SECONDS, frozenset({"running"}) | jobs.TERMINAL)
        assert wait_for_run(run, TRAIN_SECONDS) == "done", describe_run(run)
        return run

    yield train
    for home in homes:
        stop_processes_using_home(home)


POINTS_JS = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullData) { return 0; }
  const lengths = plot._fullData.map(t => Number(t._length ?? (t.x && t.x.length) ?? 0)).filter(n => !isNaN(n));
  return lengths.length ? Math.max(...lengths) : 0;
}"""


def curve_points(page: Page) -> int:
    """Points of the longest trace of the page's first Plotly chart (0 before it is drawn), read with a timeout."""
    return int(page.wait_for_function(f"() => [({POINTS_JS})()]", timeout=30_000).json_value()[0])


def see(
    page: Page,
    text: str | re.Pattern[str],
    why: str,
    timeout: float = PAGE_MS,
    diagnose: Callable[[], str] = lambda: "",
) -> None:
    """Wait for ``text`` on the page; fail saying ``why`` it should be there, with ``diagnose()``, after ``timeout`` ms."""
    try:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        pytest.fail(f"{why}: {text!r} not shown within {timeout / 1000:.0f} s\n{diagnose()}", pytrace=False)


@pytest.mark.browser
@pytest.mark.slow
def test_train_watch_promote_evaluate_in_chromium(streamlit_app, browser_page: Page, tmp_path: Path) -> None:
    """Launch a tiny lung-masked run from the Training page, watch the curve grow live, promote it, evaluate it."""
    # 100 images per class make an epoch last about a second on an idle machine, so the 3 s refresh sees the curve grow
    data, home = write_dataset(tmp_path / "data", n_per_class=100, size=64), tmp_path / "home"
    url = streamlit_app(
        {
            "CXR_DATA_DIR": str(data),
            "CXR_HOME": str(home),
            "CXR_MODELS_DIR": str(tmp_path / "models"),
            "CXR_LUNGS_MODEL": str(REPO / "models" / "lungs"),
        }
    )

    def server_log() -> str:
        """The alerts on the page and the end of the server log."""
        alerts = "\n".join(page.locator('[data-testid="stAlert"]').all_inner_texts())
        return f"--- alerts ---\n{alerts}\n--- streamlit log ---\n{streamlit_app.log_tail(url)}"

    page = browser_page
    page.goto(f"{url}/Training")
    see(page, "New run", "the Training page did not render", diagnose=server_log)
    form = {"size": ("Image size (px)", 64), "epochs": ("Epochs", BROWSER_EPOCHS), "batch": ("Batch size", 4)}
    for label, value in form.values():
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Enter")
        settle(page, PAGE_MS)
    roi = page.locator('[data-testid="stSelectbox"]').filter(has_text="Region of interest")
    roi.get_by_role("combobox").click()
    page.get_by_role("option", name="lung_mask (blank everything outside the lungs)").click()
    settle(page, PAGE_MS)
    form["roi"] = ("Region of interest", "lung_mask")
    page.get_by_role("button", name="Launch training").click()
    see(page, re.compile(r"launched\.|Not launched"), "the launch got no answer", diagnose=server_log)
    assert page.get_by_text("Not launched").count() == 0, server_log()
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1, f"one launch should make one run, found {[r.name for r in runs]}"
    run = runs[0]
    request = json.loads((run / "job.json").read_text())["request"]
    assert {key: request.get(key) for key in form} == {key: value for key, (_, value) in form.items()}, (
        f"the form values did not reach the job: {request}"
    )
    wait_for_run(run, START_SECONDS, frozenset({"running"}) | jobs.TERMINAL)
    page.evaluate("() => { window.__not_reloaded = true; }")
    seen: list[int] = []
    deadline = time.monotonic() + TRAIN_SECONDS
    while len({p for p in seen if p > 0}) < 2:
        status = jobs.effective_status(run)["status"]
        seen.append(curve_points(page))
        if status in jobs.TERMINAL or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    growing = sorted({p for p in seen if p > 0})
    assert len(growing) >= 2, f"the curve did not gain points live: {growing}\n{describe_run(run)}"
    assert page.evaluate("() => window.__not_reloaded === true")
    running_in_old_tab = page.get_by_text("🟢 running").count() > 0
    fresh = page.context.new_page()
    page.close()
    page = fresh
    assert wait_for_run(run, TRAIN_SECONDS) == "done", describe_run(run)
    model = json.loads((run / "model" / "train_config.json").read_text())
    assert (
        model["roi"] == "lung_mask"
        and json.loads((run / "model" / "preprocess.json").read_text())["roi"] == "lung_mask"
    )
    page.goto(f"{url}/Training")
    see(
        page,
        "✅ done",
        "the reopened Training page does not show the finished run",
        diagnose=lambda: describe_run(run) + "\n" + server_log(),
    )
    try:
        page.wait_for_function(f"() => ({POINTS_JS})() === {BROWSER_EPOCHS}", timeout=60_000)
    except PlaywrightTimeout:
        pytest.fail(f"the reopened tab shows {curve_points(page)} epochs, not all {BROWSER_EPOCHS}", pytrace=False)
    page.get_by_role("link", name="Run history").click()
    page.get_by_label("Model name").wait_for(timeout=PAGE_MS)
    page.get_by_label("Model name").fill("browser-tiny")
    page.get_by_label("Model name").press("Enter")
    settle(page, PAGE_MS)
    page.get_by_role("button", name="Promote").click()
    see(page, "Registered as", "promotion was not confirmed", diagnose=server_log)
    page.get_by_role("link", name="Evaluation").first.click()
    see(
        page,
        "Metrics on",
        "the Evaluation page did not evaluate the promoted model",
        timeout=180_000,
        diagnose=server_log,
    )
    assert page.get_by_text("browser-tiny").first.is_visible()
    see(page, "Model card", "the Evaluation page shows no model card", diagnose=server_log)
    assert page.locator(".js-plotly-plot").count() >= 3
    print(f"curve points seen while training: {growing}; still running when the tab closed: {running_in_old_tab}")


def test_figure_builders_and_worst_errors() -> None:
    """Curves overlay one colour per run; worst errors are the most confident mistakes at the threshold."""
    import pandas as pd

    from cxr_core.evaluate import figures
    from cxr_core.evaluate import view as ev

    metrics = pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [1.0, 0.5],
            "val_loss": [1.1, 0.7],
            "accuracy": [0.6, 0.8],
            "val_accuracy": [0.5, 0.7],
            "auc": [0.6, 0.9],
            "val_auc": [0.55, 0.8],
        }
    )
    fig = figures.epoch_curves({"a": metrics, "b": metrics.head(1)})
    assert len(fig.data) == 12 and {t.line.color for t in fig.data if t.name.startswith("a")} != {
        t.line.color for t in fig.data if t.name.startswith("b")
    }
    assert len(figures.batch_loss_curve(pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 0.8, 0.7]})).data) == 2
    assert len(figures.epoch_curves({"empty": pd.DataFrame()}).data) == 0
    cases = pd.DataFrame(
        {
            "y": [0, 0, 0, 1, 1, 1],
            "p": [0.95, 0.6, 0.1, 0.05, 0.4, 0.9],
            "path": list("abcdef"),
            "label": ["Normal"] * 3 + ["COVID"] * 3,
            "source": ["s"] * 6,
        }
    )
    worst = ev.worst_errors(cases, 0.5, k=4)
    assert list(worst["false positives"]["path"]) == ["a", "b"] and list(worst["false negatives"]["path"]) == ["d", "e"]
    live = ev.at_threshold(cases, 0.5)
    assert live["sensitivity"] == pytest.approx(1 / 3) and live["specificity"] == pytest.approx(1 / 3)
    assert live["confusion"] == {"tp": 1, "fp": 2, "tn": 1, "fn": 2}
