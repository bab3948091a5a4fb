"""Read models built only from events, each with its own tracking position."""
