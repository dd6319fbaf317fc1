"""The listening page as HTML: plain markup and inline CSS, no script, every file linked relative to the page."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; margin: 0.1em 0; }
table.clips { border-collapse: collapse; width: 100%; table-layout: fixed; }
table.clips th, table.clips td { border: 1px solid #ddd; padding: 0.4em; vertical-align: top; text-align: left; }
table.clips th.row { width: 11em; font-weight: normal; word-break: break-all; }
audio { width: 100%; } img { width: auto; max-width: 100%; height: auto; display: block; margin-top: 0.3em; }
table.numbers { border-collapse: collapse; margin: 0.5em 0; }
table.numbers th, table.numbers td { border: 1px solid #ddd; padding: 0.2em 0.6em; }
table.numbers td.number { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-style: italic; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class Clip:
    """A sound on the page: its WAV and spectrogram PNG (names beside index.html) and a short caption."""

    wav: str
    png: str
    caption: str = ""


@dataclass(frozen=True)
class Row:
    """One line of a section: its title, then one clip (or a note) per column."""

    title: str
    cells: list[Clip | str]


@dataclass(frozen=True)
class Section:
    """A heading, a sentence saying what is shown, and a table of clips under column headings."""

    title: str
    intro: str
    columns: list[str]
    rows: list[Row]


@dataclass(frozen=True)
class RunPanel:
    """What the page shows of one run besides sounds: the evaluate table (as evaluate prints it) or the line
    saying which command makes it, and the training curves' PNG or why there is none."""

    label: str
    metrics_table: str | None
    metrics_note: str
    curves_png: str | None
    curves_note: str


def render_page(title: str, facts: list[str], sections: list[Section], panels: list[RunPanel]) -> str:
    """The whole index.html."""
    body = [f"<h1>{_text(title)}</h1>"] + [f'<p class="meta">{_text(fact)}</p>' for fact in facts]
    for section in sections:
        body += [f"<h2>{_text(section.title)}</h2>", f"<p>{_rich(section.intro)}</p>", _clip_table(section)]
    body.append("<h2>Measurements</h2>")
    for panel in panels:
        if len(panels) > 1:
            body.append(f"<h3>{_text(panel.label)}</h3>")
        body.append(table_html(panel.metrics_table) if panel.metrics_table else "")
        body.append(f'<p class="note">{_rich(panel.metrics_note)}</p>')
    body.append("<h2>Training curves</h2>")
    for panel in panels:
        if len(panels) > 1:
            body.append(f"<h3>{_text(panel.label)}</h3>")
        if panel.curves_png:
            body.append(f'<img src="{_attr(panel.curves_png)}" '
                        f'alt="training curves of {_attr(panel.label)}">')
        body.append(f'<p class="note">{_rich(panel.curves_note)}</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body>\n</html>\n")


def _clip_table(section: Section) -> str:
    head = "<tr><th class=\"row\"></th>" + "".join(f"<th>{_text(c)}</th>" for c in section.columns) + "</tr>"
    rows = []
    for row in section.rows:
        cells = "".join(_cell(cell) for cell in row.cells)
        rows.append(f'<tr><th class="row">{_text(row.title)}</th>{cells}</tr>')
    return f'<table class="clips">\n{head}\n' + "\n".join(rows) + "\n</table>"


def _cell(cell: Clip | str) -> str:
    if isinstance(cell, str):
        return f'<td class="note">{_text(cell)}</td>'
    caption = f"<div>{_text(cell.caption)}</div>" if cell.caption else ""
    return (f'<td>{caption}<audio controls preload="metadata" src="{_attr(cell.wav)}"></audio>'
            f'<img src="{_attr(cell.png)}" alt="log-mel spectrogram of {_attr(cell.wav)}"></td>')


def table_html(text: str) -> str:
    """evaluate's printed summary as HTML: its Markdown tables as tables, every other line as a paragraph."""
    parts: list[str] = []
    rows: list[list[str]] = []

    def close_table() -> None:
        if rows:
            head = "".join(f"<th>{_text(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(_number_cell(c) for c in row) + "</tr>" for row in rows[1:])
            parts.append(f'<table class="numbers"><tr>{head}</tr>{body}</table>')
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # the | --- | ---: | line
                rows.append(cells)
            continue
        close_table()
        if line.strip():
            parts.append(f"<p>{_text(line)}</p>")
    close_table()
    return "\n".join(parts)


def _number_cell(value: str) -> str:
    try:
        float(value)
    except ValueError:
        return f"<td>{_text(value)}</td>"
    return f'<td class="number">{_text(value)}</td>'


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _rich(value: str) -> str:
    """Escaped text with `backquoted` commands as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _text(value))


def _attr(value: str) -> str:
    return html.escape(value, quote=True)
