"""Streamlit widgets built from the training option specs (:func:`cxr_core.train.config.train_options`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import streamlit as st

from cxr_core.train.config import GROUPS, OptionSpec

GROUP_TITLES = {
    "model": "Model",
    "preprocessing": "Preprocessing",
    "optimisation": "Optimisation",
    "sampling": "Data and sampling",
    "augmentation": "Augmentation",
    "robustness": "Source robustness",
    "advanced": "Advanced options",
}
COLUMNS = 4


def float_step(value: float) -> float:
    """A step one decimal below the leading digit of ``value`` (0.1 for 0.95, 1 for 15, 1e-4 for 0.001)."""
    return 10.0 ** (math.floor(math.log10(abs(value))) - 1) if value else 0.01


def _json_or_text(text: str) -> Any:
    """``text`` parsed as JSON when it is, else the text itself (the config check then names the problem)."""
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return text


def option_widget(
    box: Any, spec: OptionSpec, value: Any, key: str | None = None, help_text: str | None = None, disabled: bool = False
) -> Any:
    """The widget of one option in ``box`` (st or a column) showing ``value``; returns what the user set."""
    label = spec.option.label
    common = {"help": help_text or spec.option.help, "key": key or f"option-{spec.name}", "disabled": disabled}
    if spec.choices is not None:
        choices = list(spec.choices)
        names = spec.option.choice_labels
        return box.selectbox(
            label,
            choices,
            index=choices.index(value) if value in choices else 0,
            format_func=lambda choice: names.get(choice, choice),
            **common,
        )
    if spec.kind is bool:
        return box.toggle(label, value=bool(value), **common)
    if spec.kind is int:
        return box.number_input(label, value=value, step=1, placeholder="default", **common)
    if spec.kind is float:
        step = float_step(float(value if value is not None else spec.default or 0))
        digits = max(0, -math.floor(math.log10(step)))
        return box.number_input(
            label,
            value=None if value is None else float(value),
            step=step,
            format=f"%.{digits}f",
            placeholder="default",
            **common,
        )
    if spec.kind is dict:
        text = box.text_input(label, value=json.dumps(value) if value else "", placeholder='{"name": value}', **common)
        return _json_or_text(text)
    return box.text_input(label, value=value or "", placeholder="default", **common).strip() or None


def options_form(
    specs: Sequence[OptionSpec],
    values: Mapping[str, Any],
    keys: Mapping[str, str] | None = None,
    helps: Mapping[str, str] | None = None,
    disabled: frozenset[str] = frozenset(),
    custom: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> dict[str, Any]:
    """Widgets for ``specs`` grouped as :data:`GROUPS` (advanced ones in an expander); returns name -> value.

    ``values`` pre-fills widgets (else the spec default); ``custom`` renders an option itself from the values chosen
    so far (e.g. parameters of the chosen method).
    """
    keys, helps, custom = keys or {}, helps or {}, custom or {}
    out: dict[str, Any] = {}
    for group in GROUPS:
        members = [spec for spec in specs if spec.option.group == group]
        if not members:
            continue
        box = st.expander(GROUP_TITLES[group]) if group == "advanced" else st.container()
        with box:
            if group != "advanced":
                st.markdown(f"**{GROUP_TITLES[group]}**")
            plain = [spec for spec in members if spec.name not in custom]
            for start in range(0, len(plain), COLUMNS):
                row = plain[start : start + COLUMNS]
                for column, spec in zip(st.columns(COLUMNS), row):
                    out[spec.name] = option_widget(
                        column,
                        spec,
                        values.get(spec.name, spec.default),
                        keys.get(spec.name),
                        helps.get(spec.name),
                        spec.name in disabled,
                    )
            for spec in members:
                if spec.name in custom:
                    out[spec.name] = custom[spec.name](out)
    return out
