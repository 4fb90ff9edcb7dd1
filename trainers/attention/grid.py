"""Which attention kinds read the task's grid, in one place.

A task whose tokens are an image read row by row has a grid (H, W) with T = H·W
(trainers/contracts.py TaskData.grid; None for 1-D tasks). An attention class that reads
it sets the class attribute `uses_grid = True` and takes a `grid=` keyword ((H, W) or
None) in its constructor; one that cannot run without a grid also sets
`requires_grid = True` (the spec's rules refuse it on a task without one). A class
without the attributes neither reads nor needs a grid, so kinds that ignore grids need
no change: read the attributes only through these helpers.
"""


def uses_grid(cls: type) -> bool:
    return getattr(cls, "uses_grid", False)


def requires_grid(cls: type) -> bool:
    return getattr(cls, "requires_grid", False)


def grid_kwargs(cls: type, grid: tuple[int, int] | None) -> dict:
    """The `grid=` keyword for a kind's constructor: only kinds that read the grid take one."""
    return {"grid": grid} if uses_grid(cls) else {}


def grid_shape(grid: tuple[int, int] | None, length: int, kind: str) -> tuple[int, int]:
    """(H, W) of a kind that needs its T tokens on the grid; ValueError when there is no
    grid or T is not H·W (the sequence would not be the image read row by row)."""
    if grid is None:
        raise ValueError(f"attention kind {kind!r} needs a task with a grid (image tokens), got a 1-D task")
    height, width = grid
    if height * width != length:
        raise ValueError(f"attention kind {kind!r}: {length} tokens are not the grid's {height}x{width} = "
                         f"{height * width}")
    return height, width
