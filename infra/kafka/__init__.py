"""Scaled mode: the Kafka event bus (relay, partitioned workers, read-your-writes).

See ``docs/scaled.md``. Nothing here is imported by the embedded mode.
"""
