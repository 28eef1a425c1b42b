"""The anytime curves of a study's replay, as a figure in the report's style:
``python -m transcenter.dashboards.replay_figure replay.json -o anytime.png``.

``replay.json`` is what ``python -m transcenter.platform.replay <study> --json`` prints: for the
study's own setting (``actual``) and each other setting, one curve per seed of the best objective
found against the hours spent.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def anytime_figure(out: dict[str, Any]) -> Figure:
    """Returns the figure: one colour per setting (the study's own first), one step line per seed
    of the best objective found against the hours of the trials ended so far."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    rows = [("actual (the study's setting)", out["actual"])]
    rows += [(s["setting"], s) for s in out["settings"]]
    for i, (label, row) in enumerate(rows):
        for seed, curve in enumerate(row["anytime"]):
            if curve:
                hours, best = zip(*curve)
                ax.plot(hours, best, drawstyle="steps-post", color=f"C{i}", alpha=0.6,
                        label=label if seed == 0 else None)
    ax.set(xlabel=f"{out['actual']['hours_unit']}-hours spent",
           ylabel=f"best {out['actual']['objective']} found",
           title="Replay: best found against cost (one line per seed)")
    ax.legend(fontsize="small")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transcenter.dashboards.replay_figure",
                                description=__doc__.splitlines()[0])
    p.add_argument("replay", help="the JSON that `python -m transcenter.platform.replay --json` prints")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    try:
        with open(args.replay) as f:
            out = json.load(f)
        fig = anytime_figure(out)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {args.replay}: {e!r}", file=sys.stderr)
        return 2
    FigureCanvasAgg(fig)
    fig.savefig(args.output, format="png", dpi=100, metadata={"Software": None})
    print(f"anytime curves: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
