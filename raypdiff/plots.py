"""The reports' PNGs: a figure drawn without pyplot (no backend switch in the caller's session, nothing to close),
laid out and saved in one place."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional


@contextmanager
def figure(path: Path, figsize: tuple[float, float], dpi: int = 110, rect: Optional[tuple] = None, **subplots):
    """Yields (fig, axes) of Figure.subplots(**subplots); on leaving the block, lays them out (inside rect) and
    saves the PNG to path."""
    # imported here: the report modules load in every Ray worker, and most of them never draw
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    yield fig, fig.subplots(**subplots)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)


def palette(n: int):
    """A qualitative colour map for n series (index it modulo .N)."""
    import matplotlib

    return matplotlib.colormaps["tab20" if n > 10 else "tab10"]
