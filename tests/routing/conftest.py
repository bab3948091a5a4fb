from __future__ import annotations

from collections.abc import Iterator

import pytest

from contact_centre.clock import ManualClock
from infra.config import Settings
from infra.runtime import Runtime, build
from tests.channels.conftest import clouds  # noqa: F401  (the local Slack stand-in)
from tests.routing.support import T0, Desk


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def desk_runtime(settings: Settings, manual: ManualClock) -> Iterator[Runtime]:
    rt = build(settings, clock=manual)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def desk(desk_runtime: Runtime, manual: ManualClock) -> Desk:
    return Desk(desk_runtime, manual)
