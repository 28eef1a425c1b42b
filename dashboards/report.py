"""One self-contained HTML report of a study: ``python -m transcenter.dashboards.report <dir> -o r.html``.

Figures are drawn with matplotlib's Agg canvas and embedded as base64 PNG data URIs; the CSS is inline;
there is no script and no network reference, so the file can be mailed or archived as it is. Every
section degrades to a sentence when its data is missing, so an empty study or one whose trials all
failed still gives a valid report.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from transcenter.dashboards import analysis, dataset_tables, pareto, summary
from transcenter.dashboards.dataset_tables import DataSetTables
from transcenter.dashboards.summary import StudyTables, collect
from transcenter.store import uri

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
td { white-space: pre-wrap; } .note { color: #666; font-style: italic; } img { max-width: 100%; }
.scroll, details > div { max-height: 30em; overflow: auto; } .wide { overflow-x: auto; }
"""
_FEW_CLASSES = 20  # more classes than this: per-class tables scroll, the counts start collapsed


def write_report(
    paths: analysis.StudyPaths,
    output: str | os.PathLike,
    by: str = analysis.HEATMAP_SIZE,
    first_epochs: int = 3,
) -> Path | str:
    """Writes the HTML report of one or more study directories.

    Args:
        paths: Study directories (``<storage_path>/<study>``, local or URI).
        output: The HTML file to write, a local path or URI (``s3://``); its directory is created.
        by: The hyperparameter the per-value curves and tables are grouped by.
        first_epochs: The lower-limit curves cover epochs 1 to this.

    Returns:
        The absolute path of the written file, or its URI.
    """
    tables = collect(paths, by=by, first_epochs=first_epochs)
    studies = sorted(set(tables.status["study"])) or [Path(p).name for p in analysis.as_paths(paths)]
    title = "TransCenter study " + ", ".join(studies)
    sections = [  # the data first: what a user checks before spending GPU hours on it
        (summary.DATASET_TITLE + ("" if len(studies) == 1 else f" of study {study}"),
         _dataset_section(data))
        for study, data in tables.datasets.items()
    ]
    sections += [
        ("Lower limit: AP50 (%) in the first epochs (paper Fig. 6)",
         (_note(tables.lower_note) if tables.lower_note else "")
         + _section(tables.lower, lambda: _lower_limit_figure(tables.lower, by))),
        ("Upper limit: AP (%) at the last epoch of the best trial that trained every epoch (best: "
         "the highest AP at its last epoch), beside the paper (Tables 4 and 2)",
         (_note(tables.upper_note) if tables.upper_note else "") + _section(tables.upper)),
    ]
    sections += [(summary.AUDIT_TITLE + ("" if len(studies) == 1 else f" of study {study}"),
                  _section(table)) for study, table in tables.audit.items()]
    if tables.compute is not None:  # studies before cost metrics have no such section
        sections.append((summary.COMPUTE_TITLE, _compute_section(tables, by)))
    if tables.class_ap50 is not None:  # studies before per-class AP have no such section
        sections.append((summary.CLASS_AP50_TITLE, _class_ap50_section(tables)))
    sections += [
        (summary.OVERLAP_TITLE, _section(tables.overlap)),
        ("Position vs. size heatmap loss (paper Fig. 7)",
         _section(tables.losses, lambda: _loss_figure(tables.losses, by), table=False)),
        ("The search: each hyperparameter vs. the trial's AP50 (%) at its last epoch",
         _search_section(tables)),
        (summary.IMPORTANCE_TITLE,
         _section(tables.importance, lambda: _importance_figure(tables.importance))),
        (summary.TRIALS_TITLE, _section(tables.status)),
    ]
    body = "".join(f"<h2>{html.escape(name)}</h2>\n{content}\n" for name, content in sections)
    counts = tables.status["status"].value_counts().to_dict()
    overview = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trials"
    document = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
                f"<h1>{html.escape(title)}</h1>\n<p>{len(tables.epochs)} trial-epochs; "
                f"{html.escape(overview)}. AP values are in percent (0-100), as the paper prints them."
                f"</p>\n{_note(tables.audit_note) if tables.audit_note else ''}{body}</body></html>\n")
    location = uri.resolve(os.fspath(output))
    filesystem, path = uri.filesystem(location)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(document.encode("utf-8"))
    logger.info("wrote report %s", uri.mask(location))
    return Path(location) if uri.is_local(location) else location


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _section(data: pd.DataFrame | pd.Series | str, draw=None, table: bool = True) -> str:
    """Returns a section's HTML: the figure ``draw()`` makes and the table, or a note saying why not."""
    if isinstance(data, str):
        return _note(data)
    if data.empty:
        return _note("Nothing to show yet.")
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    parts = [_img(draw())] if draw else []
    if table:
        html_table = _counts_as_text(frame).to_html(float_format=lambda x: f"{x:.4g}", na_rep="–",
                                                    border=0)
        parts.append(f'<div class="wide">{html_table}</div>')  # a wide table scrolls, not the page
    return "\n".join(parts)


def _class_ap50_section(tables: StudyTables) -> str:
    if isinstance(tables.class_ap50, str):
        return _note(tables.class_ap50)
    table = _section(tables.class_ap50.set_index("class"))
    if len(tables.class_ap50) > _FEW_CLASSES:  # scrolls in a box, the note below stays in view
        table = f'<div class="scroll">\n{table}\n</div>'
    return f"{table}\n<p>{html.escape(summary.class_ap50_note(tables))}</p>"


def _dataset_section(data: DataSetTables) -> str:
    """The splits table, the heatmap-size table with what it means, and the per-class counts,
    collapsed (and scrolling) when there are many classes."""
    classes = len(data.per_class)
    counts = (f"<details{' open' if classes <= _FEW_CLASSES else ''}><summary>Objects per class "
              f"and split ({classes} classes)</summary><div>\n{_section(data.per_class)}\n</div>"
              "</details>")
    size = f"{data.input_size} px" if data.input_size else "not recorded"
    return "\n".join([
        _section(data.splits), _note(dataset_tables.SPLITS_NOTE),
        f"<p>Input size: {html.escape(size)}. {html.escape(dataset_tables.SAME_CELL_NOTE)}</p>",
        _section(data.same_cell), *([_note(data.same_cell_note)] if data.same_cell_note else []),
        counts])


def _counts_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable integer columns (counts) as text: pandas prints their NA as ``<NA>``, whatever
    ``na_rep`` and ``formatters`` say."""
    counts = [i for i, dtype in enumerate(frame.dtypes) if isinstance(dtype, pd.Int64Dtype)]
    if not counts:
        return frame
    frame = frame.copy()
    for i in counts:
        frame.isetitem(i, [str(v) if not pd.isna(v) else "–" for v in frame.iloc[:, i]])
    return frame


def figure_alt(fig: Figure) -> str:
    """Returns a text saying what ``fig`` draws, from its axes as drawn: per axes its title, each
    axis's label and shown range, and each labelled line's extent along x; axes joined by " | "."""
    described = []
    for ax in fig.axes:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        parts = [f"x: {ax.get_xlabel() or 'x'} {x0:.3g} to {x1:.3g}",
                 f"y: {ax.get_ylabel() or 'y'} {y0:.3g} to {y1:.3g}"]
        for line in ax.lines:
            xs = np.asarray(line.get_xdata(), dtype=float)
            if not line.get_label().startswith("_") and np.isfinite(xs).any():
                parts.append(f"{line.get_label()} from x {np.nanmin(xs):.3g} to {np.nanmax(xs):.3g}")
        described.append(f"{ax.get_title() or 'figure'}: {'; '.join(parts)}")
    return " | ".join(described) or "figure"


def _img(fig: Figure) -> str:
    """Returns ``fig`` as an HTML image (a PNG data URI) whose alt text is :func:`figure_alt`."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<p><img alt="{html.escape(figure_alt(fig))}" src="data:image/png;base64,{data}"></p>'


def _lower_limit_figure(lower: pd.DataFrame, by: str) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, (value, group) in enumerate(lower.groupby(level=by)):
        epochs = group.index.get_level_values("epoch")
        ax.errorbar(epochs, group["mean"], yerr=group["std"].fillna(0), marker="o", capsize=3,
                    color=f"C{i}", label=f"{by} = {value}")
        if "paper.AP50" in group and np.isfinite(group["paper.AP50"].iloc[0]):
            ax.axhline(group["paper.AP50"].iloc[0], color=f"C{i}", linestyle=":", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="AP50 (%), mean ± std over trials",
           title="Lower limit (dotted: paper Fig. 6)")
    ax.legend(fontsize="small")
    return fig


def _loss_figure(losses: pd.DataFrame, by: str) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, (value, group) in enumerate(losses.groupby(level=by)):
        epochs = group.index.get_level_values("epoch")
        for column, style, kind in (("loss_pos", "-", "position"), ("loss_size", "--", "size")):
            ax.plot(epochs, group[column], color=f"C{i}", marker=".", linestyle=style,
                    label=f"{kind}, {by} = {value}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="heatmap loss (mean over trials)",
           title="Position (solid) vs. size (dashed)")
    ax.legend(fontsize="small", ncols=2)
    return fig


def _compute_section(tables: StudyTables, by: str) -> str:
    compute = tables.compute
    if isinstance(compute, str):
        return _note(compute)
    parts = [_img(pareto.pareto_figure(tables.epochs, color_by=by if by in tables.epochs else None,
                                       paper_points=pareto.paper_models()))]
    parts.append(_note(summary.compute_note(compute)))
    parts.append(_section(compute.front.set_index("trial_id")))
    if compute.curve is not None:
        parts.append(_img(_hypervolume_figure(compute.curve)))
    return "".join(parts)


def _hypervolume_figure(curve: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.plot(curve["trials"], curve["hypervolume"], marker="o", drawstyle="steps-post")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume")
    ax.set_title("How the search progressed")
    fig.tight_layout()
    return fig


def _search_section(tables: StudyTables) -> str:
    search = tables.search[np.isfinite(tables.search["final.AP50"])]
    varied = [p for p in analysis.param_columns(search) if search[p].nunique(dropna=True) > 1]
    fixed = {p: search[p].dropna().iloc[0] for p in analysis.param_columns(search)
             if p not in varied and search[p].notna().any()}
    log_scale = {p for p in varied if analysis.is_log_scale(tables.epochs, p)}
    parts = [_img(_search_figure(search, varied, log_scale))] if varied else [
        _note("No hyperparameter takes two values among the trials with a finite AP50 at their last "
              "epoch.")]
    chosen = {p: v for p, v in fixed.items()
              if tables.set_for_study is None or p in tables.set_for_study}
    defaults = {p: v for p, v in fixed.items() if p not in chosen}
    if chosen:
        what = "Fixed" if tables.set_for_study is None else "Fixed, other than the preset's default"
        parts.append(_note(f"{what}: " + ", ".join(f"{p} = {v}" for p, v in chosen.items())))
    if defaults:
        listed = html.escape(", ".join(f"{p} = {v}" for p, v in defaults.items()))
        parts.append(f"<details><summary>The other {len(defaults)} fixed settings (the preset's "
                     f"defaults)</summary><p class=\"note\">{listed}</p></details>")
    return "\n".join(parts)


def _search_figure(search: pd.DataFrame, params: list[str], log_scale: set[str]) -> Figure:
    ncols = min(3, len(params))
    nrows = -(-len(params) // ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows), layout="constrained")
    for i, name in enumerate(params):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        values = search[name]
        if pd.api.types.is_float_dtype(values.dtype):
            ax.scatter(values, search["final.AP50"], s=12)
            if name in log_scale and (values > 0).all():
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        else:  # categorical: one column of points per value
            categories = sorted(values.dropna().unique())
            codes = values.map({c: k for k, c in enumerate(categories)})
            ax.scatter(codes, search["final.AP50"], s=12)
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set(xlabel=name, ylabel="AP50 (%) at the last epoch")
    return fig


def _importance_figure(scores: pd.Series) -> Figure:
    fig = Figure(figsize=(6, 0.4 * len(scores) + 1), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(scores.index[::-1], scores.values[::-1])
    ax.set(xlabel="importance (normalised)", title=scores.name)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; writes the report, prints its path and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dirs", nargs="+", help="<storage_path>/<study>, local path or URI")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    parser.add_argument("--by", default=analysis.HEATMAP_SIZE, help="grouping hyperparameter")
    parser.add_argument("--first-epochs", type=int, default=3, help="epochs of the lower limit")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(write_report(args.study_dirs, args.output, by=args.by, first_epochs=args.first_epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
