"""A failed task's traceback as text, without the cost of Python 3.11's markers.

Python 3.11's formatter finds each frame's column range (``co_positions()``,
walked from the start of the code object) and parses the source line with
``ast`` to draw the ``^^^^`` markers under it: most of the cost of formatting a
traceback, on the worker's path for every failed attempt. This walks
the frames by line number only and prints what Python 3.10 printed: the same
frames, source lines, chained exceptions and notes, without the markers.
Exception groups, rare in tasks, keep the standard library's layout.
"""

from __future__ import annotations

import traceback

CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
HEADER = "Traceback (most recent call last):\n"


def format_traceback(exc: BaseException) -> str:
    """The exception and its chain, oldest first, as the interpreter prints them."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        if isinstance(current, BaseExceptionGroup):
            return "".join(traceback.format_exception(exc))
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, CONTEXT
        else:
            current = None
    parts: list[str] = []
    for item, link in reversed(chain):
        if item.__traceback__ is not None:
            parts.append(HEADER)
            frames = traceback.StackSummary.extract(traceback.walk_tb(item.__traceback__))
            parts.extend(frames.format())
        parts.extend(traceback.format_exception_only(item))
        parts.append(link)
    return "".join(parts)
