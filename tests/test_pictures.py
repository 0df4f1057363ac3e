"""plumbing.pictures: grids and row labels."""
import numpy as np
import torch

from plumbing.pictures import grid_array, label_rows


def test_grid_array_places_each_image_on_white():
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = grid_array(images, nrow=2, pad=2)
    assert grid.shape == (2 * (4 + 2) + 2, 2 * (4 + 2) + 2, 3)
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 128).all() and (grid[8:12, 2:6] == 255).all()
    assert (grid[0] == 255).all() and (grid[8:12, 8:12] == 255).all()   # padding and the empty cell stay white


def test_label_rows_keeps_the_grid_and_draws_each_label_in_its_row():
    grid = np.full((2 * (20 + 2) + 2, 30, 3), 128, dtype=np.uint8)
    out = label_rows(grid, ["held-out sprite", "t=100 (SNR 8.5)"], row_height=20)
    width = out.shape[1] - grid.shape[1]
    assert out.shape[0] == grid.shape[0] and width > 0
    assert (out[:, width:] == grid).all()                     # the grid itself is untouched
    margin = out[:, :width].min(axis=2) < 128                 # dark label pixels
    assert margin[2:22].any() and margin[24:44].any()         # one label per row, inside its row
    # a space is a visible gap (PIL's built-in font left 2 blank columns, as between letters: "held-outsprite")
    cols = np.flatnonzero(margin[2:22].any(axis=0))
    assert np.diff(cols).max() >= 5
