"""Markdown tables for the reports: one row writer, so that a '|' inside a cell (a family such as
q(z_t | z_{t-1}, x), a title such as |c50 - 0.5|) is escaped and does not split the cell."""
from __future__ import annotations


def row(cells) -> str:
    """'| a | b |' with every '|' inside a cell escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The header, the separator and the rows of a markdown table, then an empty line."""
    return [row(header), "|" + "---|" * len(header), *map(row, rows), ""]
