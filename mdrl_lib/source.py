"""The library code behind a figure, shown in a notebook (d2l style: the few lines that matter).

Introduced in notebook ``01_sparse_edits``. ``show_source(edits.dense_control, start="generator =",
stop="out[name] =")`` displays the lines of the function from the first holding ``start`` to the
first one after it holding ``stop``. A marker that is not found is an error, so a notebook cannot
silently show the wrong lines after the library changes (a test runs every notebook's calls).
"""
from __future__ import annotations

import inspect
import textwrap
from typing import Callable


def source_excerpt(function: Callable, start: str | None = None, stop: str | None = None) -> str:
    """Lines of ``function``'s source from the first holding ``start`` (default: its first line) to the first
    at or after it holding ``stop`` (default: its last line), dedented. Raises ``ValueError`` naming a
    marker that is not in the source."""
    lines = inspect.getsource(function).splitlines()
    name = f"{function.__module__}.{function.__qualname__}"
    first = 0
    if start is not None:
        first = next((i for i, line in enumerate(lines) if start in line), -1)
        if first < 0:
            raise ValueError(f"{name}: no line holds start marker {start!r}")
    last = len(lines) - 1
    if stop is not None:
        last = next((i for i, line in enumerate(lines) if i >= first and stop in line), -1)
        if last < 0:
            raise ValueError(f"{name}: no line at or after {start!r} holds stop marker {stop!r}")
    return textwrap.dedent("\n".join(lines[first:last + 1]))


def show_source(function: Callable, start: str | None = None, stop: str | None = None) -> None:
    """Display :func:`source_excerpt` as a Python code block headed by the function's full name."""
    from IPython.display import Markdown, display

    display(Markdown(f"`{function.__module__}.{function.__qualname__}`\n```python\n"
                     f"{source_excerpt(function, start, stop)}\n```"))
