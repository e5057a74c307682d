"""The process map: the directly-follows graph laid out in layers and drawn with matplotlib.

Layout (no graph library needed):

1. Back edges are found by a depth-first search from the start activities
   (those nothing leads to), heaviest edges first, so loops like
   ``Failed -> Retried -> Failed`` point back up instead of stretching the map.
2. Each activity's layer is its longest distance from a start over the
   remaining acyclic edges.
3. Within a layer, activities are ordered by the mean slot of their
   neighbours in the layer before (and after, on the way back), a few sweeps,
   which removes most crossings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import PlotError
from ._base import analytics, check_choice, check_frame, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Edge = tuple[str, str, int]

FONT_SIZE = 9.0
PAD = 5.0  # points between a label and its box
GAP_ACROSS = 28.0  # points between neighbouring boxes of a layer
GAP_ALONG = 56.0  # points between layers, where the arrows and their counts go
SWEEPS = 4


def process_map(
    source: Any,
    *,
    min_count: int = 1,
    top: int | None = None,
    direction: str = "TB",
    ax: Axes | None = None,
    **filters: Any,
) -> Axes:
    """Draw the directly-follows graph: activities as boxes in layers, transitions as arrows.

    Parameters
    ----------
    source : DataFrame, EventStore or str
        The frame ``el.analytics.directly_follows`` returns (``source``,
        ``target``, ``count``), or a store or Parquet path, handed to
        ``el.analytics.directly_follows(source, **filters)``.
    min_count : int
        Leave out transitions seen fewer times (and activities left with none).
    top : int, optional
        Keep only the ``top`` most frequent transitions (after ``min_count``).
    direction : {"TB", "LR"}
        Layers from top to bottom, or from left to right.
    ax : matplotlib Axes, optional
        Draw into this Axes; by default a new figure sized to fit the map.

    Returns
    -------
    matplotlib.axes.Axes
        Each box is a ``FancyBboxPatch`` whose ``gid`` is the activity, each
        arrow a ``FancyArrowPatch`` whose ``gid`` is ``"source -> target"``;
        arrow width grows with the count, written beside it.
    """
    check_choice("direction", direction, ("TB", "LR"))
    if isinstance(source, pd.DataFrame):
        if filters:
            raise PlotError(
                f"filters {sorted(filters)} apply when the graph is computed; pass them to "
                f"el.analytics.directly_follows, or filter the frame before plotting"
            )
        frame = source
    else:
        frame = analytics().directly_follows(source, **filters)
    all_edges = _edges(frame)
    edges = thin(all_edges, min_count, top)
    figure_given = ax is not None
    ax = new_axes(ax, (6, 4))
    if not edges:
        ax.set_axis_off()
        ax.set_title(f"no transitions seen {min_count} times or more")
        return ax
    layers, slots, back = _layout(edges)
    _draw(ax, edges, layers, slots, back, direction, resize=not figure_given)
    shown = len({a for e in edges for a in e[:2]})
    ax.set_title(
        f"{shown} activities, {len(edges)} of {len(all_edges)} transitions"
        + (f" (seen {min_count}+ times)" if min_count > 1 else "")
    )
    return ax


def process_layout(source: pd.DataFrame | Iterable[Edge]) -> pd.DataFrame:
    """Where :func:`process_map` puts each activity: its ``layer`` and its ``slot`` in it.

    ``source`` is a directly-follows frame or ``(source, target, count)``
    tuples. Rows are sorted by layer, then slot.

    Examples
    --------
    >>> import pandas as pd
    >>> import eventlab as el
    >>> dfg = pd.DataFrame({"source": ["Placed", "Placed", "Paid"],
    ...                     "target": ["Paid", "Cancelled", "Shipped"],
    ...                     "count": [90, 10, 85]})
    >>> el.plots.process_layout(dfg)
        activity  layer  slot
    0     Placed      0     0
    1       Paid      1     0
    2  Cancelled      1     1
    3    Shipped      2     0
    """
    edges = _edges(source) if isinstance(source, pd.DataFrame) else [tuple(e) for e in source]
    layers, slots, _ = _layout(edges)
    rows = [(a, layers[a], slots[a]) for a in layers]
    frame = pd.DataFrame(rows, columns=["activity", "layer", "slot"])
    return frame.sort_values(["layer", "slot"], ignore_index=True)


def thin(edges: list[Edge], min_count: int, top: int | None) -> list[Edge]:
    """The edges seen at least ``min_count`` times, at most the ``top`` most frequent."""
    for name, value in (("min_count", min_count), ("top", top)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise PlotError(f"{name} must be an int, got {value!r}")
    if top is not None and top < 1:
        raise PlotError(f"top must be at least 1 (or None for every transition), got {top}")
    kept = [e for e in edges if e[2] >= min_count]
    kept.sort(key=lambda e: (-e[2], e[0], e[1]))
    return kept[:top] if top is not None else kept


def _edges(frame: pd.DataFrame) -> list[Edge]:
    check_frame(frame, ["source", "target", "count"], "process_map")
    grouped = frame.groupby(["source", "target"], sort=False)["count"].sum()
    return [(str(s), str(t), int(c)) for (s, t), c in grouped.items()]


def _layout(edges: list[Edge]) -> tuple[dict[str, int], dict[str, int], set[tuple[str, str]]]:
    """Layers, slots within layers, and the back edges (drawn against the flow)."""
    ordered = sorted(edges, key=lambda e: (-e[2], e[0], e[1]))
    nodes = list(dict.fromkeys(a for e in ordered for a in e[:2]))
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    weight_in = dict.fromkeys(nodes, 0)
    weight_out = dict.fromkeys(nodes, 0)
    for source, target, count in ordered:
        if source != target:
            successors[source].append(target)  # heaviest first
            weight_in[target] += count
            weight_out[source] += count
    back = _back_edges(nodes, successors, weight_in, weight_out)
    forward = [(s, t) for s, t, _ in ordered if s != t and (s, t) not in back]
    layers = _longest_path_layers(nodes, forward)
    return layers, _order_layers(nodes, layers, forward), back


def _back_edges(
    nodes: list[str],
    successors: dict[str, list[str]],
    weight_in: dict[str, int],
    weight_out: dict[str, int],
) -> set[tuple[str, str]]:
    """Edges closing a cycle in a depth-first search that starts at the start activities."""
    starts = [n for n in nodes if weight_in[n] == 0]
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    back: set[tuple[str, str]] = set()
    while len(state) < len(nodes):
        unseen = [n for n in nodes if n not in state]
        roots = [n for n in starts if n not in state] or [
            max(unseen, key=lambda n: (weight_out[n] - weight_in[n], -nodes.index(n)))
        ]
        for root in roots:
            if root in state:
                continue
            state[root] = 1
            stack = [(root, iter(successors[root]))]
            while stack:
                node, children = stack[-1]
                child = next(children, None)
                if child is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(child) == 1:
                    back.add((node, child))
                elif child not in state:
                    state[child] = 1
                    stack.append((child, iter(successors[child])))
    return back


def _longest_path_layers(nodes: list[str], forward: list[tuple[str, str]]) -> dict[str, int]:
    incoming = {n: 0 for n in nodes}
    outgoing: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in forward:
        incoming[target] += 1
        outgoing[source].append(target)
    layer = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if incoming[n] == 0]
    while ready:
        node = ready.pop(0)
        for target in outgoing[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return layer


def _order_layers(
    nodes: list[str], layer: dict[str, int], forward: list[tuple[str, str]]
) -> dict[str, int]:
    """Slots within each layer by the barycentre heuristic (a few down and up sweeps)."""
    rows: dict[int, list[str]] = {}
    for node in nodes:  # first seen on the heaviest edges first
        rows.setdefault(layer[node], []).append(node)
    above: dict[str, list[str]] = {n: [] for n in nodes}
    below: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in forward:
        below[source].append(target)
        above[target].append(source)
    depth = max(rows) + 1
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        order = range(1, depth) if downward else range(depth - 2, -1, -1)
        neighbours = above if downward else below
        for index in order:
            slot = {n: i for row in rows.values() for i, n in enumerate(row)}
            current = rows.get(index, [])

            def centre(node: str, neighbours=neighbours, slot=slot) -> float:
                near = neighbours[node]
                return float(np.mean([slot[n] for n in near])) if near else float(slot[node])

            rows[index] = sorted(current, key=lambda n: (centre(n), current.index(n)))
    return {n: i for row in rows.values() for i, n in enumerate(row)}


def _draw(
    ax: Axes,
    edges: list[Edge],
    layers: dict[str, int],
    slots: dict[str, int],
    back: set[tuple[str, str]],
    direction: str,
    resize: bool,
) -> None:
    sizes = _box_sizes(layers)
    centres = _centres(layers, slots, sizes, direction)
    scale = _fit(ax, centres, sizes, resize)
    # Text keeps its size in points while the map scales: shrink it along (up to 14 pt).
    font = min(FONT_SIZE * scale, 14.0)
    starts = set(layers) - {t for s, t, _ in edges if s != t}
    patches = _boxes(ax, centres, sizes, starts, font)
    counts = {(s, t): c for s, t, c in edges}
    biggest = max(counts.values())
    for (source, target), count in counts.items():
        style = {
            "arrowstyle": "-|>",
            "mutation_scale": 12 * scale,
            "linewidth": (0.8 + 2.7 * count / biggest) * scale,
            "color": "#525252",
            "zorder": 1,
            "gid": f"{source} -> {target}",
        }
        if source == target:
            label = _loop(ax, centres[source], sizes[source], direction, style)
        else:
            rad = _bend(source, target, layers, counts, back)
            label = _link(ax, centres, patches, source, target, rad, style)
        ax.text(
            *label,
            f"{count:,}",
            ha="center",
            va="center",
            fontsize=0.8 * font,
            color="#252525",
            zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
        )


def _box_sizes(layers: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Each activity's box in points at FONT_SIZE: its label's width plus padding."""
    from matplotlib.textpath import TextPath

    sizes = {}
    for name in layers:
        extent = TextPath((0, 0), name, size=FONT_SIZE).get_extents()
        sizes[name] = (extent.width + 2 * PAD, FONT_SIZE * 1.3 + 2 * PAD)
    return sizes


def _centres(
    layers: dict[str, int],
    slots: dict[str, int],
    sizes: dict[str, tuple[float, float]],
    direction: str,
) -> dict[str, tuple[float, float]]:
    """Box centres in points: layers a row (TB) or a column (LR) each, centred on one line."""
    widest = max(w for w, _ in sizes.values())
    tall = max(h for _, h in sizes.values())
    if direction == "TB":
        across, along = widest + GAP_ACROSS, tall + GAP_ALONG
    else:
        across, along = tall + GAP_ACROSS, widest + GAP_ALONG
    breadth: dict[int, int] = {}
    for name, index in layers.items():
        breadth[index] = max(breadth.get(index, 0), slots[name] + 1)
    centres = {}
    for name, index in layers.items():
        offset = (slots[name] - (breadth[index] - 1) / 2) * across
        centres[name] = (offset, -index * along) if direction == "TB" else (index * along, -offset)
    return centres


def _fit(
    ax: Axes,
    centres: dict[str, tuple[float, float]],
    sizes: dict[str, tuple[float, float]],
    resize: bool,
) -> float:
    """Set the limits so the map fills the Axes at one scale both ways; returns the
    size of one layout point on the page, in points."""
    xs = [x for x, _ in centres.values()]
    ys = [y for _, y in centres.values()]
    margin = max(max(w, h) for w, h in sizes.values()) / 2 + GAP_ACROSS
    width, height = max(xs) - min(xs) + 2 * margin, max(ys) - min(ys) + 2 * margin
    figure = ax.figure
    if resize:  # our own figure: make it the map's size (within reason), title on top
        figure.set_layout_engine("none")
        figure.set_size_inches(min(16, max(3, width / 72)), min(12, max(2, height / 72 + 0.4)))
        ax.set_position((0, 0, 1, 1 - 0.4 / figure.get_size_inches()[1]))
    box = ax.get_position()
    inches = figure.get_size_inches()
    box_w, box_h = box.width * inches[0] * 72, box.height * inches[1] * 72
    scale = min(box_w / width, box_h / height)
    x_mid, y_mid = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    ax.set_xlim(x_mid - box_w / scale / 2, x_mid + box_w / scale / 2)
    ax.set_ylim(y_mid - box_h / scale / 2, y_mid + box_h / scale / 2)
    ax.set_axis_off()
    return scale


def _boxes(
    ax: Axes,
    centres: dict[str, tuple[float, float]],
    sizes: dict[str, tuple[float, float]],
    starts: set[str],
    font: float,
) -> dict[str, Any]:
    from matplotlib.patches import FancyBboxPatch

    patches = {}
    for name, (x, y) in centres.items():
        w, h = sizes[name]
        patches[name] = FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle=f"round,pad=0,rounding_size={PAD}",
            facecolor="#d9f0d3" if name in starts else "#deebf7",
            edgecolor="#3182bd",
            linewidth=1.0,
            zorder=2,
            gid=name,
        )
        ax.add_patch(patches[name])
        ax.text(x, y, name, ha="center", va="center", fontsize=font, zorder=3)
    return patches


def _bend(
    source: str,
    target: str,
    layers: dict[str, int],
    counts: dict[tuple[str, str], int],
    back: set[tuple[str, str]],
) -> float:
    """How much an arrow curves: straight to the next layer, bowed past boxes or its twin."""
    if (source, target) in back or abs(layers[target] - layers[source]) != 1:
        return 0.35
    if (target, source) in counts:
        return 0.15  # a pair in both directions: each bows to its own side
    return 0.0


def _link(
    ax: Axes,
    centres: dict[str, tuple[float, float]],
    patches: dict[str, Any],
    source: str,
    target: str,
    rad: float,
    style: dict[str, Any],
) -> tuple[float, float]:
    """An arrow from box to box (clipped at their edges); returns where its count goes."""
    from matplotlib.patches import FancyArrowPatch

    (x1, y1), (x2, y2) = centres[source], centres[target]
    ax.add_patch(
        FancyArrowPatch(
            (x1, y1),
            (x2, y2),
            patchA=patches[source],
            patchB=patches[target],
            connectionstyle=f"arc3,rad={rad}",
            **style,
        )
    )
    # The middle of matplotlib's arc3 curve: halfway to its control point.
    return (x1 + x2) / 2 + rad / 2 * (y2 - y1), (y1 + y2) / 2 - rad / 2 * (x2 - x1)


def _loop(
    ax: Axes,
    centre: tuple[float, float],
    size: tuple[float, float],
    direction: str,
    style: dict[str, Any],
) -> tuple[float, float]:
    """A self-loop beside the box, away from the flow; returns where its count goes."""
    from matplotlib.patches import FancyArrowPatch

    (x, y), (w, h) = centre, size
    if direction == "LR":  # above the box
        start, end = (x - h / 4, y + h / 2), (x + h / 4, y + h / 2)
        label = (x, y + h / 2 + 0.8 * h)
    else:  # right of the box
        start, end = (x + w / 2, y + h / 4), (x + w / 2, y - h / 4)
        label = (x + w / 2 + 0.8 * h, y)
    ax.add_patch(FancyArrowPatch(start, end, connectionstyle="arc3,rad=-1.6", **style))
    return label
