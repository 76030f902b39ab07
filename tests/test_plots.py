"""raypdiff.plots: the one figure helper behind every report's PNG."""
from __future__ import annotations

import sys

import pytest
from PIL import Image

from raypdiff import plots


@pytest.mark.parametrize("figsize,dpi,subplots,axes_shape", [
    ((4, 3), 50, {}, None),  # one axes
    ((6, 2), 40, {"ncols": 3, "squeeze": False}, (1, 3)),  # a row of panels
])
def test_figure_saves_a_png_of_its_size(tmp_path, figsize, dpi, subplots, axes_shape):
    p = tmp_path / "f.png"
    with plots.figure(p, figsize, dpi=dpi, **subplots) as (fig, axes):
        assert (getattr(axes, "shape", None)) == axes_shape
        for ax in (axes.ravel() if axes_shape else [axes]):
            ax.plot([0, 1], [1, 0], label="line")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size == (figsize[0] * dpi, figsize[1] * dpi)


def test_drawing_leaves_pyplot_alone(tmp_path):
    """No pyplot state: a notebook's backend and open figures are untouched."""
    before = "matplotlib.pyplot" in sys.modules
    with plots.figure(tmp_path / "f.png", (2, 2), dpi=20) as (fig, ax):
        ax.bar([0, 1], [1, 2])
    assert ("matplotlib.pyplot" in sys.modules) == before


def test_a_failed_drawing_writes_no_file(tmp_path):
    p = tmp_path / "f.png"
    with pytest.raises(KeyError):
        with plots.figure(p, (2, 2)) as (fig, ax):
            {}["missing"]
    assert not p.exists()


def test_palette_has_room_for_the_series():
    assert plots.palette(4).N == 10 and plots.palette(14).N == 20
