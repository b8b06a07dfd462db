"""One table model, rendered four ways: rich (terminal), Markdown, LaTeX (booktabs) and CSV.

``attn-bench report`` and ``attn-bench profile`` describe their tables as :class:`Table` (columns
of header + cell formatter) and render them here, so a figure reads the same everywhere.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Any], str]  # row -> text
    align: str = "right"  # left | right
    fold: bool = False  # wrap long text in the terminal instead of cutting it


@dataclass
class Table:
    title: str
    columns: Sequence[Column]
    rows: Sequence[Any]
    caption: str = ""
    styles: Sequence[str | None] = field(default_factory=list)  # terminal style per row

    def cells(self) -> list[list[str]]:
        return [[str(column.cell(row)) for column in self.columns] for row in self.rows]


def wide_console(**options):
    """rich's Console (stdout, or ``stderr=True`` ...); a file or pipe gets wide lines instead of cells wrapped at
    80 columns."""
    from rich.console import Console

    console = Console(**options)
    if not console.is_terminal:
        console.width = max(console.width, 200)
    return console


def print_tables(*tables: Table) -> None:
    """Print to the terminal (or, without wrapping, to a file or pipe)."""
    console = wide_console()
    for table in tables:
        console.print(to_rich(table))


def to_rich(table: Table):
    from rich import box
    from rich.markup import escape
    from rich.table import Table as RichTable

    out = RichTable(title=escape(table.title), caption=escape(table.caption) if table.caption else None,
                    box=box.SIMPLE_HEAD, collapse_padding=True)
    for column in table.columns:
        out.add_column(escape(column.header), justify=column.align, overflow="fold" if column.fold else "ellipsis")
    styles = list(table.styles) or [None] * len(table.rows)
    for cells, style in zip(table.cells(), styles):
        out.add_row(*map(escape, cells), style=style)
    return out


def to_markdown(table: Table) -> list[str]:
    """The table's lines (header, rule, rows); ``|`` inside cells is escaped."""
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(c.header) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    return lines + ["| " + " | ".join(map(cell, row)) + " |" for row in table.cells()]


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "±": r"$\pm$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _latex_cell(text: str) -> str:
    """A cell for a paper: an empty value ("-") as "--", a negative number with a true minus sign."""
    if text.strip() in ("", "-"):
        return "--"
    return re.sub(r"(?<![\w.])-(?=\d)", lambda m: "$-$", latex_escape(text))


def to_latex(table: Table) -> str:
    """A booktabs ``tabular``, its caption as a comment above it."""
    align = "".join("l" if c.align == "left" else "r" for c in table.columns)
    lines = [f"% {latex_escape(table.title)}. {latex_escape(table.caption)}.", "% needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(c.header) for c in table.columns) + r" \\", "\\midrule"]
    lines += [" & ".join(map(_latex_cell, row)) + r" \\" for row in table.cells()]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(map(str, value))
    return value


def to_csv(records: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    """Machine-readable rows: full precision, lists joined with ``;``, missing values empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_value(v) for k, v in record.items()})
    return out.getvalue()
