"""Binary mask slice -> closed planar polygons along voxel borders (for RTSTRUCT export).

Each polygon follows the outer edges of the voxels, so a voxel centre is inside exactly when
the voxel is set: filling the polygons of one slice by the even-odd rule (as the RTSTRUCT
reader does, and as DICOM specifies for contours inside contours) gives the mask back
voxel for voxel, and the polygon area equals the voxel area (volumes agree in planning
systems). Outer borders run counter-clockwise in (u, v), hole borders clockwise; every
component and every hole is its own contour.
"""

from __future__ import annotations

import numpy as np

# direction (du, dv) -> index; used to pick the turn at a vertex where two voxels touch diagonally
_DIRS = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}


def _boundary_edges(plane: np.ndarray) -> np.ndarray:
    """Directed border edges (u0, v0, u1, v1) in corner coordinates, foreground on the left."""
    p = np.pad(plane.astype(bool), 1)
    fg = p[1:-1, 1:-1]
    u, v = np.nonzero(fg & ~p[1:-1, :-2])  # background at v-1: edge along +u at v
    edges = [np.c_[u, v, u + 1, v]]
    u, v = np.nonzero(fg & ~p[2:, 1:-1])  # background at u+1: edge along +v at u+1
    edges.append(np.c_[u + 1, v, u + 1, v + 1])
    u, v = np.nonzero(fg & ~p[1:-1, 2:])  # background at v+1: edge along -u at v+1
    edges.append(np.c_[u + 1, v + 1, u, v + 1])
    u, v = np.nonzero(fg & ~p[:-2, 1:-1])  # background at u-1: edge along -v at u
    edges.append(np.c_[u, v + 1, u, v])
    return np.concatenate(edges).astype(np.int64)


def mask_to_polygons(plane: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (K x 2 arrays of (u, v) voxel-index coordinates, borders at half-integers).

    Collinear points are dropped; the closing edge is implicit (last point -> first).
    """
    edges = _boundary_edges(plane)
    if not len(edges):
        return []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for n, (u0, v0, _, _) in enumerate(edges.tolist()):
        outgoing.setdefault((u0, v0), []).append(n)
    used = np.zeros(len(edges), bool)
    polygons: list[np.ndarray] = []
    for first in range(len(edges)):
        if used[first]:
            continue
        loop = []
        n = first
        while not used[n]:
            used[n] = True
            u0, v0, u1, v1 = edges[n].tolist()
            loop.append((u0, v0))
            heading = _DIRS[(u1 - u0, v1 - v0)]
            options = [m for m in outgoing[(u1, v1)] if not used[m]]
            if not options:
                break
            if len(options) > 1:  # diagonal touch: turn left (around the same voxel), so the loops stay apart
                options.sort(key=lambda m: (_DIRS[tuple((edges[m, 2:] - edges[m, :2]).tolist())] - heading) % 4)
            n = options[0]
        polygons.append(_drop_collinear(np.asarray(loop, dtype=float)) - 0.5)
    return polygons


def _drop_collinear(loop: np.ndarray) -> np.ndarray:
    prev = np.roll(loop, 1, axis=0)
    nxt = np.roll(loop, -1, axis=0)
    cross = (loop[:, 0] - prev[:, 0]) * (nxt[:, 1] - loop[:, 1]) - (loop[:, 1] - prev[:, 1]) * (nxt[:, 0] - loop[:, 0])
    return loop[cross != 0]
