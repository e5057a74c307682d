"""Plots of event histories, drawn with matplotlib (``el.plots``).

Every plot takes ``ax=`` to draw into an existing Axes, returns the matplotlib
Axes it drew on, and never calls ``plt.show()``: a notebook shows the figure,
a script saves it.

- :func:`event_timeline`: swimlanes of events per service or stream over time.
- :func:`event_rate`: events per time bucket, per type or stream.
- :func:`durations`: a histogram of durations with percentile lines.
- :func:`process_map`: the directly-follows graph, boxes in layers.
- :func:`state_evolution`: a field of a stream's state over versions or time.
- :func:`saga_gantt`: saga step attempts as a Gantt chart.
"""

from .process import process_layout, process_map
from .rates import durations, event_rate
from .saga import CATEGORIES, gantt_categories, saga_gantt
from .state import state_evolution, state_series
from .timeline import event_timeline

__all__ = [
    "CATEGORIES",
    "durations",
    "event_rate",
    "event_timeline",
    "gantt_categories",
    "process_layout",
    "process_map",
    "saga_gantt",
    "state_evolution",
    "state_series",
]
