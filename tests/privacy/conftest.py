from __future__ import annotations

from collections.abc import Iterator

import pytest

from contact_centre.clock import ManualClock
from infra.config import Settings
from infra.runtime import Runtime, build
from tests.privacy.support import T0, World


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def runtime(settings: Settings, manual: ManualClock) -> Iterator[Runtime]:
    rt = build(settings.with_overrides(retention_interval_seconds=0), clock=manual)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def world(runtime: Runtime, manual: ManualClock) -> World:
    return World(runtime, manual)
