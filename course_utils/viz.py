"""Figures for notebooks and slides: one style, one save helper, image grids.

``use_course_style()`` sets slide-readable fonts and the Okabe–Ito colour-blind-safe palette;
``save_figure(fig, notebook, name)`` writes ``<figures_dir()>/<notebook>/<name>.png`` and ``.svg``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from .paths import figures_dir

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


# Garment colour names that matplotlib does not know (or knows as another shade), so that a plot coloured by a
# "colour" attribute draws each name in its own colour (notebook 05's t-SNE); None: no single colour ("multi").
GARMENT_COLOURS = {
    "navy blue": "navy",
    "off white": "ivory",
    "cream": "#fffdd0",
    "charcoal": "#36454f",
    "mushroom brown": "#a0826d",
    "nude": "#e3bc9a",
    "skin": "#f1c27d",
    "multi": None,
}


def garment_colour(name: str) -> str | None:
    """The matplotlib colour of a garment colour name (``"red"`` -> ``"red"``, ``"Navy Blue"`` -> ``"navy"``).

    Returns None for names that are not one colour (``"Multi"``) or that matplotlib cannot draw.
    """
    key = name.strip().lower()
    if key in GARMENT_COLOURS:
        return GARMENT_COLOURS[key]
    return key if matplotlib.colors.is_color_like(key) else None


def use_course_style() -> None:
    """Slide-readable defaults: large fonts, thick lines, colour-blind-safe colour cycle, no top/right spines."""
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 14,
            "axes.titlesize": 16,
            "axes.labelsize": 14,
            "legend.fontsize": 12,
            "xtick.labelsize": 12,
            "ytick.labelsize": 12,
            "lines.linewidth": 2.5,
            "lines.markersize": 7,
            "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.fonttype": "none",
        }
    )


def save_figure(fig: plt.Figure, notebook: str, name: str) -> list[Path]:
    """Save ``fig`` as PNG and SVG under ``<figures_dir()>/<notebook>/``; returns both paths.

    The same figure gives the same files: no date in the SVG, and its element ids are hashed with a fixed salt
    instead of a random one, so a rerun of ``make run`` leaves the committed figures as they are unless they changed.
    """
    folder = figures_dir() / notebook
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": f"{notebook}/{name}"}):
        for path in paths:
            fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    return paths


def _wrap_label_to_width(label: matplotlib.text.Text, caption: str, width_px: float, wrap: int, max_lines: int) -> None:
    """Set ``label`` to ``caption`` wrapped at the most characters per line (at most ``wrap``) that fit ``width_px``.

    A caption longer than ``max_lines`` lines ends in " …", so a cut shows. The label's own font and its figure's
    renderer measure each candidate wrapping (notebook 01's image grids).
    """
    renderer = label.get_figure().canvas.get_renderer()
    for chars in range(wrap, 0, -1):
        label.set_text("\n".join(textwrap.wrap(caption, chars, max_lines=max_lines, placeholder=" …")))
        if label.get_window_extent(renderer).width <= width_px:
            return


def image_grid(
    rows: Sequence[tuple[str, Sequence[tuple[object, str, bool]]]],
    thumb: float = 1.9,
    wrap: int = 28,
    caption_lines: int = 3,
    title_wrap: int = 22,
    title_lines: int = 4,
) -> plt.Figure:
    """A grid of thumbnails: one row per query.

    Each caption is wrapped to the width of its thumbnail's column (at most ``wrap`` characters per line), so a
    long caption takes more lines instead of running under its neighbours.

    Args:
        rows: ``(row title, [(PIL image, caption, highlighted), ...])``; highlighted thumbnails get a thick
            green frame (e.g. the correct item or the target).
        thumb: inches per thumbnail.
        wrap: most characters per caption line.
        caption_lines: caption lines kept under each thumbnail, the last ending in " …" when the caption is cut
            (raise it so long captions are not cut before the attribute that tells two items apart).
        title_wrap, title_lines: characters per line and lines kept of each row title (e.g. the query text), the
            last ending in " …" when the title is cut.
    """
    n_cols = max(len(cells) for _, cells in rows)
    row_height = thumb + 0.7 + 0.15 * max(0, caption_lines - 3)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(thumb * n_cols, row_height * len(rows)), squeeze=False)
    captions = {}
    for r, (title, cells) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
            if c >= len(cells):
                ax.axis("off")
                continue
            image, captions[ax], highlighted = cells[c]
            ax.imshow(image)
            ax.set_xlabel("\n".join(textwrap.wrap(captions[ax], wrap)[:caption_lines]), fontsize=9)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(PALETTE[2] if highlighted else "#bbbbbb")
                spine.set_linewidth(5 if highlighted else 1)
        shown = "\n".join(textwrap.wrap(title, title_wrap, max_lines=title_lines, placeholder=" …"))
        axes[r, 0].set_ylabel(shown, fontsize=10, rotation=0, ha="right", va="center")
    fig.tight_layout()
    slots = [ax.get_position(original=True) for ax in axes[0]]  # the layout's columns, before aspect shrinks them
    pitch = slots[1].x0 - slots[0].x0 if n_cols > 1 else slots[0].width
    column_px = pitch * fig.bbox.width - 6  # a column's width, less a small gap between neighbouring captions
    for ax, caption in captions.items():
        _wrap_label_to_width(ax.xaxis.label, caption, column_px, wrap, caption_lines)
    fig.tight_layout()
    return fig
