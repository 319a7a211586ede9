import io

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from agent.report import PALETTE, save_png


def test_a_figure_is_written_atomically_as_a_palette_png_keeping_its_line_colours(tmp_path):
    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.linspace(0, 10, 200)
    for i in range(5):
        ax.plot(x, np.sin(x + i), color=f"C{i}")
    ax.fill_between(x, -0.5, 0.5, color="C0", alpha=0.2)
    rgba = io.BytesIO()
    fig.savefig(rgba, format="png", dpi=100)
    save_png(fig, tmp_path / "fig.png")
    assert not plt.fignum_exists(fig.number)                          # closed
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]          # no temp file left
    image = Image.open(tmp_path / "fig.png")
    assert (image.format, image.mode, image.size) == ("PNG", "P", (400, 300))
    assert len(image.getcolors()) <= PALETTE
    assert (tmp_path / "fig.png").stat().st_size < len(rgba.getvalue()) / 2
    # every line colour survives within a few levels per channel
    palette = np.array([rgb for _, rgb in image.convert("RGB").getcolors(PALETTE)])
    for i in range(5):
        line = 255 * np.array(plt.matplotlib.colors.to_rgb(f"C{i}"))
        assert np.abs(palette - line).max(axis=1).min() <= 8
