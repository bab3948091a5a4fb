"""The contact-centre domain: aggregates, events, value objects and the application service.

This package imports only the standard library and ``eventsourcing``; everything that
talks to the outside world (databases, providers, HTTP) is reached through the ports in
:mod:`contact_centre.ports` and implemented in ``infra/`` or ``channels/``.
"""
