"""Attention shares on synthetic heatmaps, the shortcut warning and overlay rendering."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.explain.attention import (
    AttentionError,
    RegionLayout,
    attention_shares,
    attention_warning,
    boxes_mask,
    colorize,
    outline,
    overlay,
    png_bytes,
    region_masks,
)

SHAPE = (200, 300)


def test_regions_partition_the_image() -> None:
    masks = region_masks(SHAPE)
    total = masks["thorax"].astype(int) + masks["border"] + masks["corners"]
    assert (total == 1).all()
    assert masks["corners"][0, 0] and masks["corners"][-1, -1]
    assert masks["border"][0, SHAPE[1] // 2] and masks["thorax"][SHAPE[0] // 2, SHAPE[1] // 2]


def test_central_blob_is_all_thorax_and_no_warning() -> None:
    heat = np.zeros(SHAPE)
    heat[80:120, 120:180] = 1.0
    shares = attention_shares(heat)
    assert shares.thorax == pytest.approx(1.0)
    assert shares.border == pytest.approx(0.0) and shares.corners == pytest.approx(0.0)
    assert attention_warning(shares) is None


def test_corner_blob_is_all_corners_and_warns() -> None:
    heat = np.zeros(SHAPE)
    heat[:10, :10] = 1.0
    shares = attention_shares(heat)
    assert shares.corners == pytest.approx(1.0)
    warning = attention_warning(shares)
    assert warning is not None and "outside the chest" in warning


def test_split_mass_gives_exact_shares() -> None:
    heat = np.zeros(SHAPE)
    heat[100, 150] = 3.0  # thorax
    heat[2, 150] = 1.0  # top border, away from the corners
    shares = attention_shares(heat)
    assert shares.thorax == pytest.approx(0.75)
    assert shares.border == pytest.approx(0.25)
    assert shares.outside_thorax == pytest.approx(0.25)


def test_uniform_heatmap_shares_equal_area_fractions() -> None:
    shares = attention_shares(np.ones(SHAPE))
    masks = region_masks(SHAPE)
    assert shares.thorax == pytest.approx(masks["thorax"].mean())
    assert shares.thorax_area == pytest.approx(masks["thorax"].mean())
    assert shares.thorax + shares.border + shares.corners == pytest.approx(1.0)


def test_lung_mask_share_and_its_warning() -> None:
    heat = np.zeros(SHAPE)
    heat[80:120, 50:100] = 1.0
    lungs = np.zeros(SHAPE, np.uint8)
    lungs[80:120, 50:75] = 255
    shares = attention_shares(heat, lung_mask=lungs)
    assert shares.lungs == pytest.approx(0.5)
    lungs[:] = 0
    warning = attention_warning(attention_shares(heat, lung_mask=lungs))
    assert warning is not None and "inside the lungs" in warning


def test_marking_boxes_share() -> None:
    heat = np.zeros(SHAPE)
    heat[50:60, 50:60] = 1.0
    shares = attention_shares(heat, boxes=[(50, 50, 5, 10)])
    assert shares.markings == pytest.approx(0.5)
    assert "markings" in attention_warning(shares)
    assert boxes_mask(SHAPE, [(-5, -5, 10, 10)]).sum() == 25


def test_empty_heatmap_has_no_shares_but_says_so() -> None:
    shares = attention_shares(np.zeros(SHAPE))
    assert shares.thorax is None and shares.to_dict()["thorax"] is None
    assert "empty" in attention_warning(shares)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(AttentionError):
        attention_shares(np.zeros((2, 2, 2)))
    with pytest.raises(AttentionError):
        attention_shares(np.ones(SHAPE), lung_mask=np.ones((5, 5)))
    with pytest.raises(AttentionError):
        RegionLayout(border=0.6)
    with pytest.raises(AttentionError):
        colorize(np.zeros((4, 4)), "rainbow-unicorn")


def test_overlay_is_uint8_rgb_and_alpha_blends() -> None:
    gray = np.full(SHAPE, 100, np.uint8)
    heat = np.zeros((50, 75), np.float32)
    heat[20:30, 30:40] = 1.0
    assert (overlay(gray, heat, alpha=0.0) == 100).all()
    out = overlay(gray, heat, alpha=0.5, colormap="inferno")
    assert out.shape == (*SHAPE, 3) and out.dtype == np.uint8
    assert not (out == 100).all()
    red = colorize(np.ones((2, 2)), "jet")
    assert red[0, 0, 0] > red[0, 0, 2], "jet's hot end should be red in RGB order"
    assert png_bytes(out)[:8] == b"\x89PNG\r\n\x1a\n"
    mask = np.zeros(SHAPE, np.uint8)
    mask[50:150, 50:150] = 1
    assert (outline(out, mask) != out).any()
