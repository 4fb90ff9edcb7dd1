"""Long Range Arena's Pathfinder, generated locally and deterministically from a seed.

The task (Linsley et al. 2018; LRA, Tay et al. 2020): an image holds dashed curves
("snakes") and two round markers; label 1 iff both markers sit at the two ends of ONE
snake, 0 iff they sit on the ends of two different snakes. LRA flattens the 32x32 image
into 1024 grey-level tokens.

The algorithm follows the reference generator (drewlinsley/pathfinder, ``snakes2.py``),
reimplemented with numpy alone and vectorized over a batch of images:

1. Two target snakes are seeded ``seed_distance`` apart (the first anywhere at least
   twice that far from the border, the second at a uniform angle around it), each with a
   first paddle (a short straight segment) in a uniform direction.
2. Both grow, in turns, one paddle at a time to ``contour_length`` paddles. A paddle starts ``gap``
   after the previous one's end, so the curve looks dashed. Its direction turns by
   ``delta`` from the previous one with weight ``cos(min(continuity * |delta|, pi/2))**2``
   (the reference's continuity prior: turns are bounded by ``pi / (2 continuity)``),
   restricted to candidates that stay inside the image and keep ``margin`` clear of
   every paddle drawn so far except the snake's own last one. An image whose target
   snakes get stuck is drawn again from scratch (the reference retries too).
3. ``contour_length // 3`` paddles long distractor snakes, ``30 // that`` of them (the
   reference's ``distractor_length = contour_length / 3`` and ``30 / distractor_length``,
   with Python 2 integer division), each seeded anywhere free; a distractor that gets
   stuck is discarded and tried again up to ``DISTRACTOR_RETRIES`` times, then skipped.
4. Markers: a disk at the first end (origin) of a target snake chosen uniformly, and one
   at the last end (terminal) of the same snake (label 1) or of the other one (label 0),
   the label a fair coin per image as in the reference.

Choices the reference leaves open or that differ, all deliberate:

- Geometry is set directly on the output grid (the reference draws 300x300 images;
  scaled down to 32 pixels its 5-pixel paddles would vanish). Lengths below are in
  units of ``size / 32`` pixels, so other sizes keep the same picture, only finer.
- Rendering: paddles and markers are stamped as disks along their centre line on a
  canvas ``SUPERSAMPLE`` times finer and box-filtered down, which gives the anti-aliased
  grey levels of the reference's ``aa_scale`` rendering; pixels are rounded to 0..255.
- Candidate turns are ``TURN_CANDIDATES`` evenly spaced angles in the allowed range,
  each jittered within its bin, instead of the pixel ring the reference samples.
- Collisions are tested on an occupancy grid ``OCCUPANCY_SCALE`` times finer than the
  output, where every drawn paddle is stamped with radius ``thickness + margin``: a new
  paddle's centre line must not touch it.
- No single-paddle distractors: LRA's settings (``use_single_paddles=False``) have none.

Everything is drawn from numpy Generators seeded by ``seed``; the returned ``Record`` keeps
each image's snakes (paddle end points) and which snake each marker sits on, so tests can
check labels against the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIFFICULTIES = {"easy": 6, "intermediate": 9, "hard": 14}  # LRA's contour lengths (paddles per target snake)

SUPERSAMPLE = 4  # canvas pixels per output pixel (anti-aliasing)
OCCUPANCY_SCALE = 2  # occupancy cells per output pixel (collision tests)
TURN_CANDIDATES = 15
SEED_PROPOSALS = 48  # first paddles (directions; places too for distractors) tried per snake
DISTRACTOR_RETRIES = 4  # the reference's max_distractor_contour_retrial
CHUNK = 2048  # images drawn at once (bounds memory: canvas + occupancy ~ 40 MB at 32x32)


@dataclass(frozen=True)
class Style:
    """The picture, in units of ``size / 32`` pixels (see the module docstring)."""

    paddle_length: float = 0.8
    gap: float = 0.8  # as long as a paddle: the curve reads as dashed
    thickness: float = 0.8
    margin: float = 0.4  # clearance between paddles of different snakes (and non-adjacent ones)
    marker_radius: float = 1.5
    seed_distance: float = 3.0
    continuity: float = 1.8  # the reference's default
    border: float = 1.0  # paddles keep this far from the image edge


@dataclass
class Record:
    """What the generator knows about each image, for checks (not cached).

    ``paddles [N, S, L, 2, 2]``: snake s's paddle l as (start, end) (y, x) points in
    pixels, NaN where absent (S = 2 targets then distractors); ``marker_snake [N, 2]``:
    the snake under the origin and the terminal marker; ``markers [N, 2, 2]``: their
    centres (y, x).
    """

    paddles: np.ndarray
    marker_snake: np.ndarray
    markers: np.ndarray


def distractor_plan(contour_length: int) -> tuple[int, int]:
    """(paddles per distractor, number of distractors), as the reference's wrapper sets them."""
    length = max(1, contour_length // 3)
    return length, 30 // length


def generate(n: int, *, seed: int, size: int = 32, contour_length: int = 14,
             style: Style = Style()) -> tuple[np.ndarray, np.ndarray, Record]:
    """``n`` images ``[n, size, size]`` uint8, labels ``[n]`` int64 and their ``Record``.

    Deterministic in ``(n, seed, size, contour_length, style)``; drawn in chunks of
    ``CHUNK`` images, each from its own child of ``seed``.
    """
    if n < 0 or size < 8 or contour_length < 1:
        raise ValueError(f"need n >= 0, size >= 8, contour_length >= 1; got {n}, {size}, {contour_length}")
    chunks = np.random.SeedSequence(seed).spawn(max(1, -(-n // CHUNK)))
    parts = [_Chunk(min(CHUNK, n - i * CHUNK), np.random.default_rng(s), size, contour_length, style).draw()
             for i, s in enumerate(chunks) if i * CHUNK < n]
    if not parts:
        return (np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64),
                Record(np.zeros((0, 2, contour_length, 2, 2)), np.zeros((0, 2), np.int64), np.zeros((0, 2, 2))))
    images, labels, records = zip(*parts)
    width = max(r.paddles.shape[1] for r in records)
    paddles = np.concatenate([np.pad(r.paddles, ((0, 0), (0, width - r.paddles.shape[1]), (0, 0), (0, 0), (0, 0)),
                                     constant_values=np.nan) for r in records])
    return (np.concatenate(images), np.concatenate(labels),
            Record(paddles, np.concatenate([r.marker_snake for r in records]),
                   np.concatenate([r.markers for r in records])))


def _disk_offsets(radius: float) -> np.ndarray:
    """Integer (dy, dx) offsets of the cells whose centre lies within ``radius`` (cells)."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy ** 2 + dx ** 2 <= max(radius, 0.5) ** 2
    return np.stack([dy[keep], dx[keep]], 1)


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of ``points [..., 2]`` to the segments ``a``-``b`` (broadcast)."""
    ab = b - a
    t = np.clip(((points - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


class _Chunk:
    """One batch of images drawn together: every snake grows one paddle per step in all
    images at once, on a per-image occupancy grid and canvas."""

    def __init__(self, n: int, rng: np.random.Generator, size: int, contour_length: int, style: Style):
        self.n, self.rng, self.size, self.contour_length = n, rng, size, contour_length
        unit = size / 32
        self.length, self.gap = style.paddle_length * unit, style.gap * unit
        self.border, self.seed_distance = style.border * unit, style.seed_distance * unit
        self.marker_radius, self.continuity = style.marker_radius * unit, style.continuity
        # Centre-line points every quarter pixel: no occupancy cell is skipped.
        self.points = np.linspace(0, 1, int(np.ceil(self.length * 4)) + 1)
        self.ink = _disk_offsets(style.thickness * unit * SUPERSAMPLE / 2)
        self.clearance = (style.thickness + style.margin) * unit  # between centre lines
        self.keep_out = _disk_offsets(self.clearance * OCCUPANCY_SCALE)
        max_turn = np.pi / (2 * self.continuity)
        self.turns = np.linspace(-max_turn, max_turn, TURN_CANDIDATES + 2)[1:-1]
        self.turn_bin = self.turns[1] - self.turns[0]

    # ------------------------------------------------------------ whole images

    def draw(self) -> tuple[np.ndarray, np.ndarray, Record]:
        """Target snakes until every image has both, then distractors, then markers."""
        n, size = self.n, self.size
        self.canvas = np.zeros((n, size * SUPERSAMPLE, size * SUPERSAMPLE), bool)
        self.occupied = np.zeros((n, size * OCCUPANCY_SCALE, size * OCCUPANCY_SCALE), bool)
        dl, dn = distractor_plan(self.contour_length)
        self.paddles = np.full((n, 2 + dn, self.contour_length, 2, 2), np.nan)
        todo = np.arange(n)
        for _ in range(100):
            if len(todo) == 0:
                break
            self.canvas[todo], self.occupied[todo], self.paddles[todo] = False, False, np.nan
            todo = todo[~self._target_snakes(todo)]
        else:
            raise RuntimeError(f"{len(todo)} Pathfinder images found no room for two snakes; "
                               "raise the image size or lower the contour length")
        for d in range(dn):
            self._distractor(2 + d, dl)
        labels = self.rng.integers(0, 2, n)
        origin_snake = self.rng.integers(0, 2, n)
        marker_snake = np.stack([origin_snake, np.where(labels == 1, origin_snake, 1 - origin_snake)], 1)
        rows = np.arange(n)
        last = self.contour_length - 1
        markers = np.stack([self.paddles[rows, marker_snake[:, 0], 0, 0],
                            self.paddles[rows, marker_snake[:, 1], last, 1]], 1)
        for m in range(2):
            self._stamp(self.canvas, rows, markers[:, m][:, None], _disk_offsets(self.marker_radius * SUPERSAMPLE),
                        SUPERSAMPLE)
        grey = self.canvas.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean((2, 4))
        images = np.rint(grey * 255).astype(np.uint8)
        return images, labels.astype(np.int64), Record(self.paddles, marker_snake, markers)

    def _target_snakes(self, rows: np.ndarray) -> np.ndarray:
        """Both target snakes in images ``rows``, grown in turns; returns which images
        succeeded. A snake's newest paddle reaches the occupancy grid only when the next
        one is placed (it must not block its own successor), so the other snake checks
        against it directly."""
        inset = 2 * self.seed_distance
        tail = self.rng.uniform(inset, self.size - inset, (len(rows), 2))
        angle = self.rng.uniform(-np.pi, np.pi, len(rows))
        other = tail + self.seed_distance * np.stack([np.sin(angle), np.cos(angle)], 1)
        ok = np.ones(len(rows), bool)
        heads, directions = [None, None], [None, None]
        for snake, start in ((0, tail), (1, other)):
            avoid = self.paddles[rows, 0, 0] if snake == 1 else None
            starts = np.repeat(start[:, None], SEED_PROPOSALS, 1)  # where it was placed, in any direction
            seeded, heads[snake], directions[snake] = self._first_paddle(rows, snake, starts, avoid)
            ok &= seeded
        for step in range(1, self.contour_length):
            for snake in (0, 1):
                avoid = self.paddles[rows, 1 - snake, step - 1 + snake]  # the other snake's newest paddle
                grown, heads[snake], directions[snake] = self._next_paddle(
                    rows, snake, step, heads[snake], directions[snake], ok, avoid)
                ok &= grown
        for snake in (0, 1):
            self._commit(rows[ok], snake, self.contour_length - 1)
        return ok

    def _snake(self, rows, snake, paddles) -> np.ndarray:
        """A distractor of ``paddles`` paddles in images ``rows``, seeded anywhere free;
        returns where it was completed (its last paddle committed there)."""
        starts = self.rng.uniform(self.border, self.size - self.border, (len(rows), SEED_PROPOSALS, 2))
        ok, head, direction = self._first_paddle(rows, snake, starts)
        for step in range(1, paddles):
            grown, head, direction = self._next_paddle(rows, snake, step, head, direction, ok)
            ok &= grown
        self._commit(rows[ok], snake, paddles - 1)
        return ok

    def _distractor(self, snake: int, paddles: int) -> None:
        """One distractor per image, tried on copies so a stuck one leaves no trace."""
        todo = np.arange(self.n)
        for _ in range(DISTRACTOR_RETRIES + 1):
            if len(todo) == 0:
                return
            canvas, occupied = self.canvas[todo].copy(), self.occupied[todo].copy()
            ok = self._snake(todo, snake, paddles)
            failed = todo[~ok]
            self.canvas[failed], self.occupied[failed] = canvas[~ok], occupied[~ok]
            self.paddles[failed, snake] = np.nan
            todo = failed

    # ------------------------------------------------------------ paddles

    def _first_paddle(self, rows, snake, starts, avoid=None):
        """A first paddle from the first free one of ``starts [m, SEED_PROPOSALS, 2]``, each
        in a uniform direction; returns (placed, head, direction)."""
        m = len(rows)
        direction = self.rng.uniform(-np.pi, np.pi, (m, SEED_PROPOSALS))
        ends = starts + self.length * np.stack([np.sin(direction), np.cos(direction)], -1)
        free = self._free(rows, starts, ends, avoid)
        placed, pick, r = free.any(1), free.argmax(1), np.arange(m)
        start, end, direction = starts[r, pick], ends[r, pick], direction[r, pick]
        self._place(rows[placed], snake, 0, start[placed], end[placed])
        return placed, end, direction

    def _next_paddle(self, rows, snake, step, head, direction, ok, avoid=None):
        """The next paddle of every image's ``snake``, a gap after ``head``, turned by a
        continuity-weighted angle among the free candidates."""
        m = len(rows)
        jitter = self.rng.uniform(-0.5, 0.5, (m, TURN_CANDIDATES)) * self.turn_bin
        turned = direction[:, None] + self.turns[None] + jitter
        unit = np.stack([np.sin(turned), np.cos(turned)], -1)
        starts = head[:, None] + self.gap * unit
        ends = starts + self.length * unit
        weight = np.cos(np.minimum(self.continuity * np.abs(turned - direction[:, None]), np.pi / 2)) ** 2
        weight = weight * self._free(rows, starts, ends, avoid)
        total = weight.sum(1)
        grown = ok & (total > 0)
        cumulative = np.cumsum(weight, 1)
        pick = (cumulative < self.rng.random(m)[:, None] * total[:, None]).sum(1).clip(max=TURN_CANDIDATES - 1)
        r = np.arange(m)
        start, end, new_direction = starts[r, pick], ends[r, pick], turned[r, pick]
        g = rows[grown]
        self._commit(g, snake, step - 1)  # the previous paddle now blocks the others' growth
        self._place(g, snake, step, start[grown], end[grown])
        return grown, np.where(grown[:, None], end, head), np.where(grown, new_direction, direction)

    def _free(self, rows, starts, ends, avoid=None) -> np.ndarray:
        """``[m, K]``: whether candidate segments (``[m, K, 2]`` ends) stay in the image,
        touch no occupied cell and keep clear of ``avoid`` (``[m, 2, 2]``, a paddle not yet
        on the grid)."""
        pts = starts[..., None, :] + (ends - starts)[..., None, :] * self.points[:, None]  # [m, K, P, 2]
        inside = ((pts >= self.border) & (pts <= self.size - self.border)).all((-1, -2))
        cells = np.clip((pts * OCCUPANCY_SCALE).astype(np.int64), 0, self.size * OCCUPANCY_SCALE - 1)
        hit = self.occupied[rows[:, None, None], cells[..., 0], cells[..., 1]].any(-1)
        if avoid is not None:
            near = _distance_to_segment(pts, avoid[:, None, None, 0], avoid[:, None, None, 1]) < self.clearance
            hit |= near.any(-1)
        return inside & ~hit

    def _place(self, rows, snake, step, start, end) -> None:
        """Record a paddle and ink it on the canvas (it blocks others once committed)."""
        self.paddles[rows, snake, step] = np.stack([start, end], 1)
        self._stamp(self.canvas, rows, self._centre_line(start, end), self.ink, SUPERSAMPLE)

    def _commit(self, rows, snake, step) -> None:
        """Mark paddle ``step`` of ``snake`` as occupied (with its keep-out margin)."""
        ends = self.paddles[rows, snake, step]
        self._stamp(self.occupied, rows, self._centre_line(ends[:, 0], ends[:, 1]), self.keep_out, OCCUPANCY_SCALE)

    def _centre_line(self, start, end) -> np.ndarray:
        return start[:, None] + (end - start)[:, None] * self.points[:, None]  # [m, P, 2]

    @staticmethod
    def _stamp(grid: np.ndarray, rows: np.ndarray, points: np.ndarray, offsets: np.ndarray, scale: int) -> None:
        """Set the cells of ``grid[rows]`` within the disk ``offsets`` of each point (pixels)."""
        if len(rows) == 0:
            return
        cells = (points * scale).astype(np.int64)[:, :, None, :] + offsets  # [m, P, D, 2]
        y, x = cells[..., 0], cells[..., 1]
        keep = (y >= 0) & (y < grid.shape[1]) & (x >= 0) & (x < grid.shape[2])
        r = np.broadcast_to(rows[:, None, None], y.shape)
        grid[r[keep], y[keep], x[keep]] = True
