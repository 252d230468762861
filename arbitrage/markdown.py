"""Markdown tables, shared by the CLI summary, the dataset card and the report."""

from __future__ import annotations


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in body]
    return "\n".join(lines)


def usd(value) -> str:
    return "—" if value is None else f"${value:,.4f}"
