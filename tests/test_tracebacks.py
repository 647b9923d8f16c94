"""The stored traceback is the interpreter's, minus 3.11's ``^^^^`` marker lines."""

from __future__ import annotations

import re
import traceback

import pytest

from exporter.middleware.tracebacks import format_traceback

# A line of only carets and spaces under a source line (3.11's position markers).
MARKERS = re.compile(r"^ *[~^]+ *\n", re.MULTILINE)


def standard(exc: BaseException) -> str:
    return MARKERS.sub("", "".join(traceback.format_exception(exc)))


def catch(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


def nested(depth: int) -> None:
    if depth == 0:
        {"a": 1}["missing"]
    nested(depth - 1)


def with_cause() -> None:
    try:
        nested(2)
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc


def handled_then_raised() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        raise ValueError("during handling")  # noqa: B904


def suppressed() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        raise ValueError("context suppressed") from None


def noted() -> None:
    exc = ValueError("with a note")
    exc.add_note("task 42, attempt 2")
    raise exc


def recursive(n: int) -> int:
    return recursive(n + 1)


@pytest.mark.parametrize(
    "fn",
    [lambda: nested(3), with_cause, handled_then_raised, suppressed, noted, lambda: recursive(0)],
    ids=["frames", "cause", "context", "suppressed-context", "notes", "recursion"],
)
def test_same_text_as_the_standard_library_without_markers(fn: object) -> None:
    exc = catch(fn)
    text = format_traceback(exc)
    assert text == standard(exc)
    assert text.startswith("Traceback (most recent call last):\n")
    assert "^^^" not in text


def test_chain_is_printed_oldest_first_with_its_link() -> None:
    text = format_traceback(catch(with_cause))
    first, second = text.split("The above exception was the direct cause")
    assert "KeyError: 'missing'" in first
    assert second.rstrip().endswith("RuntimeError: lookup failed")


def test_source_lines_are_included() -> None:
    text = format_traceback(catch(lambda: nested(0)))
    assert '{"a": 1}["missing"]' in text


def test_a_cycle_in_the_chain_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    text = format_traceback(a)
    assert text.count("ValueError: a") == 1
    assert text.count("ValueError: b") == 1


def test_exception_without_traceback_is_only_its_line() -> None:
    assert format_traceback(ValueError("never raised")) == "ValueError: never raised\n"


def test_exception_groups_keep_the_standard_layout() -> None:
    def group() -> None:
        raise ExceptionGroup("two failed", [ValueError("one"), KeyError("two")])

    exc = catch(group)
    text = format_traceback(exc)
    assert text == "".join(traceback.format_exception(exc))
    assert "| ValueError: one" in text
