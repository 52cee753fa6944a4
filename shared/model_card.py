"""model_card.md: what a model is for, what it was trained on, how well it does, and its limits."""

from pathlib import Path

from shared.io import write_text


def metrics_table(rows: dict[str, dict], columns: list[str]) -> str:
    """A Markdown table with one row per model and one column per metric."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = [_cell(values.get(column)) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_model_card(path: str | Path, title: str, sections: dict[str, str]) -> None:
    """Sections in the order given, each a heading and Markdown text."""
    parts = [f"# {title}", ""]
    for heading, body in sections.items():
        parts += [f"## {heading}", "", body.strip(), ""]
    write_text(path, "\n".join(parts))


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
