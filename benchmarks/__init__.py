"""Throughput and memory benchmarks for eventlab, side by side with a peer library.

Run ``python -m benchmarks.run`` (or ``make bench``) from the project root; add
``--quick`` for a scaled-down run that finishes within a minute.
"""
