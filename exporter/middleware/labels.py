"""What the sending side tells the worker through the message's labels.

The send time travels as whole microseconds since the epoch: an int costs a
fraction of a float's repr() to write and to parse, on both sides and in the
broker's JSON. Brokers that carry labels as text (taskiq's ``labels_types``)
give it back as an int, or as a string that :func:`sent_at` parses.
"""

from __future__ import annotations

from typing import Any

SENT_AT_LABEL = "_taskiq_exporter_sent_us"
# Set by a sender that does not write the PENDING row (record_pending=False):
# the worker then encodes the params itself.
NO_PARAMS_LABEL = "_taskiq_exporter_no_params"
RETRIES_LABEL = "_retries"

# The buffer's key of an attempt: the task id itself for a first attempt (no
# allocation, its hash is cached), (task_id, attempt) for a retry.
BufferKey = str | tuple[str, int]


def buffer_key(task_id: str, attempt: int) -> BufferKey:
    return task_id if attempt == 1 else (task_id, attempt)


def sent_at(value: Any) -> float | None:
    """Epoch seconds from the label's value (text; an int from an older sender),
    or None when it is missing or odd."""
    if value.__class__ is int:
        return value * 1e-6
    if not isinstance(value, str):
        return None  # missing, or not ours (a float would be read as seconds)
    try:
        return int(value) * 1e-6
    except ValueError:
        return None


def attempt_of(retries: Any) -> int:
    """The attempt number from taskiq's ``_retries`` label (absent: the first)."""
    if retries is None:
        return 1
    try:
        return int(retries) + 1
    except (TypeError, ValueError):
        return 1


def attempt_key(task_id: str, retries: Any) -> tuple[int, BufferKey]:
    """The attempt number and its key in the row buffer."""
    if retries is None:
        return 1, task_id
    attempt = attempt_of(retries)
    return attempt, buffer_key(task_id, attempt)
