"""`taskiq-exporter tail` lines."""

from __future__ import annotations

from exporter.cli.tail import format_event


def test_a_line_shows_the_event_and_escapes_control_characters() -> None:
    event = {
        "type": "task_event",
        "task_name": "app:send\x1b[2J",
        "status": "failed",
        "timestamp": "2026-11-28T12:00:01.123456+00:00",
        "data": {"task_id": "abc", "attempt": 2, "duration_ms": 12.345,
                 "error_message": "ValueError: bad\nline\x07"},
    }  # fmt: skip
    line = format_event(event, colour=False)
    assert line.startswith("12:00:01.123  failed")
    assert "abc#2" in line
    assert "12.3 ms" in line
    assert "\x1b" not in line
    assert "\n" not in line
    assert "\\x1b[2J" in line
    assert "ValueError: bad\\nline\\x07" in line
    coloured = format_event(event, colour=True)
    assert coloured.startswith("\033[31m")
    assert coloured.endswith("\033[0m")
