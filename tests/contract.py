"""What the issue fixes about the events table, written down once for every test."""

# The columns of the events table and the fields of a RecordedEvent, in order.
EVENT_COLUMNS = [
    "position",
    "event_id",
    "stream_id",
    "version",
    "type",
    "data",
    "metadata",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "occurred_at",
    "schema_version",
]
