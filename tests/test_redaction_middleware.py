"""Where the middleware redacts: the sender (post_send) when it knows the task,
else the worker (pre_execute), which alone can tell a positional password."""

from __future__ import annotations

import json
from pathlib import Path

from taskiq import InMemoryBroker, TaskiqMessage

from exporter import MonitoringMiddleware
from exporter.middleware.labels import NO_PARAMS_LABEL
from exporter.rows import PARAMS


def message(task_name: str, *args: object) -> TaskiqMessage:
    return TaskiqMessage(
        task_id="t-1", task_name=task_name, labels={}, labels_types={}, args=list(args), kwargs={}
    )


def middleware(tmp_path: Path, with_task: bool) -> MonitoringMiddleware:
    mw = MonitoringMiddleware(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    broker = InMemoryBroker().with_middlewares(mw)
    if with_task:

        @broker.task(task_name="app:login")
        async def login(user: str, password: str) -> None:
            return None

    return mw


async def test_a_sender_that_knows_the_task_redacts_a_positional_password(
    tmp_path: Path,
) -> None:
    mw = middleware(tmp_path, with_task=True)
    sent = await mw.pre_send(message("app:login", "alice", "hunter2"))
    assert NO_PARAMS_LABEL not in sent.labels
    await mw.post_send(sent)
    params = json.loads(mw._rows["t-1"][PARAMS])
    assert params == {"args": ["alice", "***"], "kwargs": {}, "_redacted": ["args[1]"]}


async def test_a_sender_that_does_not_know_the_task_leaves_the_params_to_the_worker(
    tmp_path: Path,
) -> None:
    sender = middleware(tmp_path, with_task=False)
    sent = await sender.pre_send(message("app:login", "alice", "hunter2"))
    assert NO_PARAMS_LABEL in sent.labels
    await sender.post_send(sent)
    assert sender._rows["t-1"][PARAMS] is None  # nothing stored that could hold it

    worker = middleware(tmp_path, with_task=True)
    received = message("app:login", "alice", "hunter2")
    received.labels.update(sent.labels)
    await worker.pre_execute(received)
    (state,) = worker._active.values()
    assert json.loads(state[0][PARAMS])["args"] == ["alice", "***"]


async def test_a_sender_without_positional_arguments_needs_no_signature(tmp_path: Path) -> None:
    mw = middleware(tmp_path, with_task=False)
    msg = message("app:unknown")
    msg.kwargs["password"] = "hunter2"
    sent = await mw.pre_send(msg)
    assert NO_PARAMS_LABEL not in sent.labels
    await mw.post_send(sent)
    assert json.loads(mw._rows["t-1"][PARAMS])["kwargs"] == {"password": "***"}
