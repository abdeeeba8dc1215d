"""The model card's "Why this model is the default" section: built from the candidates' audit.json, never typed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from cxr_core.evaluate.audit import save_audit
from cxr_core.evaluate.card import SelectionRule, base_card, card_with_selection, read_card, render_markdown, write_card
from cxr_core.util.atomic import write_json_atomic

SECTION = "## Why this model is the default"
DATA = "/data/sample"


def audit(auc: float, blanked: float, attention: float, level: str, data_dir: str = DATA) -> dict[str, Any]:
    """A shortcut audit result with the keys the card reads."""
    return {
        "auc": auc,
        "auc_lungs_blanked": blanked,
        "auc_lungs_only": 0.8,
        "lung_attention_mean": attention,
        "lung_area_mean": 0.35,
        "verdict_level": level,
        "verdict": f"{level} verdict",
        "data_dir": data_dir,
        "split": "test",
        "n": 40,
        "model_version": "abc123",
        "created": "2026-01-01T00:00:00+00:00",
    }


def model_dir(path: Path, name: str, roi: str, result: dict[str, Any]) -> Path:
    """A model directory with a card and an audit.json (as `cxr audit` leaves it)."""
    card = base_card(name, "cxr_net", 1000, {"method": "clahe", "size": 128, "roi": roi})
    write_card(path, {**card, "shortcut_audit": result})
    write_json_atomic(path / "audit.json", result)
    return path


def own_card(auc: float = 0.985, blanked: float = 0.74, attention: float = 0.47) -> dict[str, Any]:
    """The card of the model being documented, with its own shortcut audit."""
    return {
        **base_card("default-v9", "cxr_net", 1000, {"method": "clahe", "size": 160, "roi": "none"}),
        "shortcut_audit": audit(auc, blanked, attention, "mixed"),
    }


def test_section_explains_the_choice_with_the_alternatives_audit_numbers(tmp_path: Path) -> None:
    alt = model_dir(tmp_path / "lung_model", "lm-1", "lung_mask", audit(0.9488, 0.4114, 0.6199, "lungs"))
    card = card_with_selection(own_card(), [alt], notes=["The lung model ships beside it."])
    assert card["selection"]["alternatives"][0]["auc_lungs_blanked"] == 0.4114
    written = write_card(tmp_path / "default", card)
    decision = written["selection"]["decision"]
    assert decision["chosen"] == "this model" and decision["this_model_chosen"] and decision["lung_goal_met_by"] == []
    assert read_card(tmp_path / "default") == written

    text = (tmp_path / "default" / "card.md").read_text()
    section = text[text.index(SECTION) :]
    assert "whose test AUC reaches 0.97 (issue #4's target for the shipped default)" in section
    assert (
        "| this model (default-v9) | cxr_net | none | 160 | 0.985 | 0.740 | 0.800 | 47% (35%) | mixed | yes |"
        in section
    )
    assert (
        "| `lung_model` (lm-1) | cxr_net | lung_mask | 128 | 0.949 | 0.411 | 0.800 | 62% (35%) | lungs | no |"
        in section
    )
    assert "**This model is the default by this rule.** Its own shortcut verdict is *mixed*" in section
    assert (
        "`lung_model` relies more on the lungs (lungs-blanked AUC 0.411 vs 0.740, 62% vs 47% of Grad-CAM in the "
        "lungs) but its test AUC 0.949 misses the 0.97 target."
    ) in section
    assert "met by no candidate." in section and "- The lung model ships beside it." in section


def test_rule_names_a_better_alternative_instead_of_hiding_it(tmp_path: Path) -> None:
    alt = model_dir(tmp_path / "better", "b-1", "lung_mask", audit(0.975, 0.55, 0.75, "lungs"))
    weak = model_dir(tmp_path / "weak", "w-1", "lung_crop", audit(0.90, 0.80, 0.40, "mixed"))
    card = write_card(tmp_path / "default", card_with_selection(own_card(), [alt, weak], SelectionRule(min_auc=0.97)))
    decision = card["selection"]["decision"]
    assert decision["chosen"] == "better" and not decision["this_model_chosen"]
    assert decision["lung_goal_met_by"] == ["better"]
    text = render_markdown(card)
    assert "**By this rule `better` should be the default, not this model.**" in text
    assert "this model reaches the AUC target but relies less on the lungs (lungs-blanked AUC 0.740 vs 0.550" in text
    assert "`weak` misses the AUC target (test AUC 0.900 < 0.97) and does not rely more on the lungs" in text
    assert "met by better." in text


def test_reaudit_refreshes_the_decision(tmp_path: Path) -> None:
    alt = model_dir(tmp_path / "lung_model", "lm-1", "lung_mask", audit(0.95, 0.41, 0.62, "lungs"))
    directory = tmp_path / "default"
    write_card(directory, card_with_selection(own_card(), [alt]))
    assert read_card(directory)["selection"]["decision"]["this_model_chosen"]
    save_audit(directory, audit(0.93, 0.60, 0.5, "mixed"))
    card = read_card(directory)
    assert card["selection"]["decision"]["chosen"] == "lung_model"
    assert "| this model (default-v9) | cxr_net | none | 160 | 0.930 | 0.600 |" in (directory / "card.md").read_text()


def test_cards_without_selection_have_no_section(tmp_path: Path) -> None:
    card = write_card(tmp_path, own_card())
    assert "selection" not in card and SECTION not in (tmp_path / "card.md").read_text()


def test_bad_comparisons_are_refused(tmp_path: Path) -> None:
    unaudited = tmp_path / "unaudited"
    write_card(unaudited, base_card("u", "cxr_net", 10, {}))
    with pytest.raises(ValueError, match="has no audit.json"):
        card_with_selection(own_card(), [unaudited])
    elsewhere = model_dir(tmp_path / "elsewhere", "e", "lung_mask", audit(0.95, 0.4, 0.6, "lungs", data_dir="/other"))
    with pytest.raises(ValueError, match="not comparable"):
        card_with_selection(own_card(), [elsewhere])
    with pytest.raises(ValueError, match="no shortcut audit"):
        card_with_selection(base_card("x", "cxr_net", 10, {}), [elsewhere])


def test_shipped_default_card_says_why_with_numbers_from_the_audit_files() -> None:
    default, alternative = REPO / "models" / "default", REPO / "models" / "cxr_net_lung_mask"
    card = read_card(default)
    own = json.loads((default / "audit.json").read_text())
    other = json.loads((alternative / "audit.json").read_text())
    (stored,) = card["selection"]["alternatives"]
    assert stored["dir"] == "cxr_net_lung_mask"
    assert {k: stored[k] for k in ("auc", "auc_lungs_blanked", "lung_attention_mean")} == {
        k: other[k] for k in ("auc", "auc_lungs_blanked", "lung_attention_mean")
    }
    assert card["shortcut_audit"]["auc_lungs_blanked"] == own["auc_lungs_blanked"]
    text = (default / "card.md").read_text()
    assert text == render_markdown(card)
    section = text[text.index(SECTION) :]
    assert f"| {other['auc']:.3f} | {other['auc_lungs_blanked']:.3f} |" in section
    assert f"| {own['auc']:.3f} | {own['auc_lungs_blanked']:.3f} |" in section
    assert card["selection"]["decision"]["this_model_chosen"] == ("This model is the default by this rule" in section)
