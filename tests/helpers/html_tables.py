"""Reading the status page's HTML tables back, as a browser would show them."""

from __future__ import annotations

from html.parser import HTMLParser


class Tables(HTMLParser):
    """Rows of every <table id=...> as lists of cell texts, plus every href."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "a":
            self.links.append(attrs["href"])

    def rows(self, table_id: str) -> list[dict[str, str]]:
        """The table's rows as {column heading: cell text} (columns depend on the probers shown)."""
        heading, *rows = self.tables[table_id]
        return [dict(zip(heading, row, strict=False)) for row in rows]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
