"""Interactive explorers for notebooks, built on ipywidgets (``el.widgets``).

Each widget is a thin view over a pure function that returns plain values
(states, DataFrames, HTML strings), so the logic is testable without a browser:

- :func:`time_travel` over :func:`time_travel_view`: a stream's state at any
  version, business time or knowledge time, and the diff to the stop before.
- :func:`event_browser` over :func:`browse_events` and :func:`event_detail`.
- :func:`projection_debugger` over :func:`projection_steps`: events applied one
  at a time, the state before and after.
- :func:`saga_stepper` over :func:`saga_step_view`: a saga's events beside its
  Gantt chart.

Every widget returned is an ``ipywidgets.VBox`` whose controls and views are
also attributes (``w.slider``, ``w.state_view``, ...), for scripting and tests.
ipywidgets is imported only when a widget is built.
"""

from .browser import browse_events, event_browser, event_detail
from .debugger import projection_debugger, projection_steps
from .saga import saga_step_view, saga_stepper
from .time_travel import time_travel, time_travel_points, time_travel_view

__all__ = [
    "browse_events",
    "event_browser",
    "event_detail",
    "projection_debugger",
    "projection_steps",
    "saga_step_view",
    "saga_stepper",
    "time_travel",
    "time_travel_points",
    "time_travel_view",
]
