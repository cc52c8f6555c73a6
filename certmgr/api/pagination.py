from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Cursor pages: no COUNT(*) over large tables, stable under concurrent inserts."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"
