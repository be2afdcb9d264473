"""pneumo/export/orientation.py on its own: the heads' fit and thresholds on planted data."""

import numpy as np

from pneumo.app.pipeline.orientation import OrientationCheck
from pneumo.export.orientation import ORIENTATIONS, fit_orientation, score_set


def _planted(n: int, seed: int) -> dict[str, np.ndarray]:
    """Features whose first two columns say "upside down" and "mirrored", plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ORIENTATIONS:
        x = rng.normal(size=(n, 12))
        x[:, 0] += 7.0 * (name in ("rotate_180", "flip_vertical"))
        x[:, 1] += 7.0 * (name in ("rotate_180", "flip_horizontal"))
        out[name] = x
    return out


def test_heads_fitted_by_patient_refuse_no_held_out_upright_image_and_find_the_turned_ones():
    train = _planted(400, 0)
    groups = np.repeat(np.arange(200), 2)  # two images per patient
    block, figures = fit_orientation(train, groups)
    up = figures["upside_down"]
    assert up["false_alarms_upright"] == 0.0  # the threshold sits above every upright score
    assert min(up["detected"].values()) > 0.95
    assert figures["mirrored"]["false_alarms_upright"] <= 0.001 + 1e-12
    check = OrientationCheck(block)  # what the app loads
    assert check.verdict(train["rotate_180"][0]).fix == "rotate_180"
    assert check.verdict(train["upright"][0]).fix is None
    ext = score_set(block, _planted(200, 1))  # never fitted on
    assert ext["upside_down"]["false_alarms_upright"] <= 0.02
    assert min(ext["upside_down"]["detected"].values()) > 0.9
    assert set(figures["fix_chosen_right"]) == {"rotate_180", "flip_vertical"}
