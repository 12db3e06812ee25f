"""Figure helpers: colour names drawn in their own colour, image grids that keep whole captions."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from course_utils import viz  # noqa: E402


def test_garment_colour_names_map_to_their_own_colour():
    assert viz.garment_colour("red") == "red"
    assert viz.garment_colour(" Navy Blue ") == "navy"
    assert viz.garment_colour("beige") == "beige" and viz.garment_colour("teal") == "teal"
    assert viz.garment_colour("Multi") is None and viz.garment_colour("no such colour") is None


def test_image_grid_keeps_the_caption_lines_and_title_it_is_asked_to():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    caption = " ".join(f"word{i}" for i in range(30))  # about 200 characters: 8 lines of 28
    title = "a long query " * 10
    short = viz.image_grid([(title, [(image, caption, False)] * 3)], thumb=3)
    full = viz.image_grid(
        [(title, [(image, caption, True)] * 3)], thumb=3, caption_lines=10, title_wrap=40, title_lines=10
    )
    assert short.axes[0].get_xlabel().count("\n") == 2  # the default keeps 3 lines...
    assert short.axes[0].get_xlabel().endswith(" …")  # ... and shows that it cut the caption
    assert full.axes[0].get_xlabel().replace("\n", " ") == caption
    assert full.axes[0].get_ylabel().replace("\n", " ") == title.strip()
    assert short.axes[0].get_ylabel().endswith(" …")  # a cut title says so too (it was cut without a sign)
    plt.close("all")


def test_image_grid_wraps_long_captions_to_their_column_so_neighbours_do_not_overlap():
    image = np.zeros((80, 60, 3), dtype=np.uint8)  # portrait photos: the thumbnail is narrower than its column
    captions = [f"Brand{i} Women Grey Melange Cotton Briefs Pack Of Two" for i in range(6)]
    fig = viz.image_grid([("a query", [(image, caption, False) for caption in captions])], thumb=2.0, caption_lines=6)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.xaxis.label.get_window_extent(renderer) for ax in fig.axes]
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:]))
    assert [ax.get_xlabel().replace("\n", " ") for ax in fig.axes] == captions  # narrower lines, no word lost
    plt.close(fig)


def test_a_notebook_run_by_hand_saves_its_figures_beside_its_outputs_not_in_the_committed_figures(
    tmp_path, monkeypatch
):
    # JupyterLab, no runner: only the runner's full profile points FASHION_COURSE_FIGURES at figures/
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("FASHION_COURSE_FIGURES", raising=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    saved = viz.save_figure(fig, "01_baseline_clip", "curve")
    plt.close(fig)
    assert saved == [tmp_path / "figures" / "01_baseline_clip" / f"curve.{kind}" for kind in ("png", "svg")]
    assert all(path.stat().st_size > 0 for path in saved)


def test_saving_the_same_figure_twice_writes_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_FIGURES", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 2])
    first = [path.read_bytes() for path in viz.save_figure(fig, "01_baseline_clip", "curve")]
    second = [path.read_bytes() for path in viz.save_figure(fig, "01_baseline_clip", "curve")]
    plt.close(fig)
    assert first == second  # SVG element ids hashed with a fixed salt, no date
