"""What the report modules share: summaries over tasks, a report dict written as JSON / Markdown / PNG, and the
Markdown cells they format alike (figures: plots.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from raypdiff.storage import Location


def write(out: Path, stem: str, report: dict, markdown: Callable[[dict], str],
          plot: Optional[Callable[[dict, Path], object]] = None) -> list[Path]:
    """<stem>.json, <stem>.md and, given plot, <stem>.png in out, each drawn from the report dict alone; their paths."""
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    write_json(paths[0], report)
    paths[1].write_text(markdown(report))
    if plot is not None:
        paths.append(out / f"{stem}.png")
        plot(report, paths[-1])
    return paths


def write_json(path: Path | Location, report: dict) -> None:
    path.write_text(json.dumps(report, indent=1))


def flip_rates(flips: list[float], twins: dict[str, float]) -> dict:
    """The flip checks over tasks: the mean share of predictions that flip with the examples' labels, and the mean
    share of rows a label-swapped twin predicts the other way (None where no task was checked)."""
    return {"flipped_examples_mean": float(np.mean(flips)) if flips else None, "tasks": len(flips),
            "twins": twins, "twins_mean": float(np.mean(list(twins.values()))) if twins else None}


def table(header: list[str]) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]


def format_ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def cell(value: float, ci: list[float]) -> str:
    """A figure with its interval: 0.812 [0.790, 0.833]."""
    return f"{value:.3f} {format_ci(ci)}"


def share(x: Optional[float]) -> str:
    """A rate as a percentage; n/a where nothing was counted."""
    return "n/a" if x is None else f"{x:.1%}"
