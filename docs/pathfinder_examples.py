"""Draws docs/pathfinder_examples.png: generated Pathfinder images, one row per label.

    PYTHONPATH=. .venv/bin/python docs/pathfinder_examples.py
"""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from trainers.tasks import pathfinder

PER_ROW = 6


def main() -> None:
    difficulties = list(pathfinder.DIFFICULTIES.items())
    fig = Figure(figsize=(PER_ROW * 1.3, 2 * len(difficulties) * 1.45), layout="constrained")
    grid = fig.subplots(2 * len(difficulties), PER_ROW)
    for d, (difficulty, contour_length) in enumerate(difficulties):
        images, labels, _ = pathfinder.generate(64, seed=0, contour_length=contour_length)
        for label in (1, 0):
            row = grid[2 * d + 1 - label]
            for ax, i in zip(row, np.flatnonzero(labels == label)[:PER_ROW]):
                ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
            what = "connected (1)" if label else "not connected (0)"
            row[0].set_ylabel(f"{difficulty}\n{what}", fontsize=7)
    fig.suptitle("Pathfinder 32x32: are the two markers the ends of one curve?", fontsize=9)
    fig.savefig(Path(__file__).with_name("pathfinder_examples.png"), dpi=110)


if __name__ == "__main__":
    main()
