"""Process managers: routing, timers, delivery, webhooks, retention."""
