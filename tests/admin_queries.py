"""Admin changelists read their rows in a fixed number of queries: a column showing a related row (a
profile's CA, an order's account and its profile, through ``__str__`` or ``organization_id``) must come
with the list's query, not one query per row; and a list reads no PEM or key. ``assert_queries_do_not_grow``
lists each page, adds rows, and lists it again."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

BULK_COLUMNS = ('"private_key"', '"certificate_pem"', '"chain_pem"', '"csr_pem"')


def changelist(client: Client, url: str) -> tuple[int, list[str]]:
    """The rows ``url`` lists and the SQL it took."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(response.context["cl"].result_list), [q["sql"] for q in ctx.captured_queries]


def assert_queries_do_not_grow(client: Client, urls: Iterable[str], grow: Callable[[], None]) -> None:
    """Each changelist takes as many queries after ``grow()`` added rows to it as before."""
    urls = list(urls)
    client.get(urls[0])  # the session's first page loads the user and the session once
    before = {url: changelist(client, url) for url in urls}
    grow()
    grown = []
    for url, (rows, queries) in before.items():
        more_rows, more_queries = changelist(client, url)
        assert more_rows > rows, (url, rows, more_rows)  # the page lists the new rows
        for sql in more_queries:
            read = [column for column in BULK_COLUMNS if column in sql]
            assert not read, (url, read, sql)
        if len(more_queries) != len(queries):
            grown.append(
                f"{url}: {rows} rows in {len(queries)} queries, {more_rows} in {len(more_queries)}; "
                f"the last: {more_queries[-1][:300]}"
            )
    assert not grown, "\n".join(grown)
