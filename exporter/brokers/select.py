"""The broker from its import string, and the inspector that fits its class."""

from __future__ import annotations

from typing import Any

from exporter.brokers.base import Inspector, SentTime


def load_broker(spec: str) -> Any:
    """The object ``module:variable`` names, imported as ``taskiq worker`` does (the
    current directory on the path). Raises ValueError with what went wrong."""
    from taskiq.abc.broker import AsyncBroker
    from taskiq.cli.utils import import_object

    try:
        broker = import_object(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import {spec!r}: {exc}") from exc
    if not isinstance(broker, AsyncBroker):
        raise ValueError(f"{spec!r} is not a taskiq broker ({type(broker).__name__})")
    return broker


def _class_of(broker: Any, module: str, name: str) -> type | None:
    # At run time, and only if installed: every broker library is optional.
    try:
        imported = __import__(module, fromlist=[name])
    except ImportError:
        return None
    found = getattr(imported, name, None)
    return found if isinstance(found, type) and isinstance(broker, found) else None


def inspector_for(broker: Any, *, sent_time: SentTime) -> Inspector | None:
    """The inspector for ``broker``, None when its kind cannot be inspected."""
    if _class_of(broker, "taskiq_redis", "ListQueueBroker"):
        from exporter.brokers.redis_list import RedisListInspector

        return RedisListInspector(broker, sent_time=sent_time)
    if _class_of(broker, "taskiq_redis", "RedisStreamBroker"):
        from exporter.brokers.redis_stream import RedisStreamInspector

        return RedisStreamInspector(broker)
    if _class_of(broker, "taskiq_aio_pika", "AioPikaBroker"):
        from exporter.brokers.rabbitmq import RabbitInspector

        return RabbitInspector(broker)
    for kind, pull in (("PullBasedJetStreamBroker", True), ("PushBasedJetStreamBroker", False)):
        if _class_of(broker, "taskiq_nats", kind):
            from exporter.brokers.nats import nats_inspector

            return nats_inspector(broker, pull=pull)
    return None
