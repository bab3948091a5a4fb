"""New ids are version 7 UUIDs: unique, and ordered by the time they were made."""

from __future__ import annotations

import time
import uuid

from contact_centre.ids import new_id


def test_new_ids_are_rfc_version_7_uuids_stamped_with_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_later_sort_after_earlier_ones_as_uuids_and_as_text() -> None:
    made = []
    for _ in range(5):
        made.append(new_id())
        time.sleep(0.002)  # the next millisecond at least
    assert sorted(made) == made
    assert sorted(str(u) for u in made) == [str(u) for u in made]


def test_ids_made_in_the_same_millisecond_are_distinct() -> None:
    made = [new_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert len({u.int >> 80 for u in made}) < len(made)  # many shared a millisecond
