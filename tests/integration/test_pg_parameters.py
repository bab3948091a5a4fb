"""Parameters on PostgreSQL: lists go in the binary format, and every value arrives as it
was sent, whatever it holds."""

from __future__ import annotations

import json

from infra.db import PostgresDatabase, to_pg


def test_lists_are_marked_binary_and_other_parameters_text() -> None:
    assert to_pg("SELECT ? WHERE a = ANY(?) AND b LIKE '5%'", (False, True)) == (
        "SELECT %s WHERE a = ANY(%b) AND b LIKE '5%%'"
    )
    assert to_pg("SELECT ?, ?") == "SELECT %s, %s"


def test_list_items_that_text_arrays_quote_arrive_unchanged(postgres_url: str) -> None:
    awkward = [
        json.dumps({"a": 'say "hi", {ok}', "b": "back\\slash"}),
        "",
        "NULL",
        " spaced ",
        "comma,separated",
        "ünï©ødé",
    ]
    db = PostgresDatabase(postgres_url)
    try:
        with db.transaction() as tx:
            tx.execute(
                "SELECT t, n FROM unnest(?::text[], ?::bigint[]) WITH ORDINALITY AS u (t, n, i)"
                " ORDER BY i",
                [awkward, [2**40 + i for i in range(len(awkward))]],
            )
            rows = tx.fetchall()
            tx.execute("SELECT ? = ANY(?), ? = ANY(?)", ["NULL", awkward, "absent", awkward])
            found = tx.fetchone()
            tx.execute("SELECT cardinality(?::text[])", [[]])
            empty = tx.fetchone()
    finally:
        db.close()
    assert rows == [(t, 2**40 + i) for i, t in enumerate(awkward)]
    assert found == (True, False)
    assert empty == (0,)
