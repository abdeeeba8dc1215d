"""The Evaluation page shows the shipped default model's shortcut-audit verdict in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.browser
@pytest.mark.data
def test_evaluation_page_shows_the_default_models_audit_verdict(streamlit_app, browser_page, sample_dir: Path) -> None:
    audit = json.loads((REPO / "models" / "default" / "audit.json").read_text())
    url = streamlit_app({"CXR_DATA_DIR": str(sample_dir), "CXR_MODELS_DIR": str(REPO / "models")})
    page = browser_page
    page.goto(f"{url}/Evaluation")
    verdict = page.get_by_text(f"Verdict: {audit['verdict_level']}.")
    verdict.wait_for(timeout=240_000)
    assert page.get_by_text(audit["verdict"][:40]).first.is_visible()
    assert page.get_by_text("Shortcut audit").first.is_visible()
