"""taskiq-nats JetStream brokers (``PullBasedJetStreamBroker``,
``PushBasedJetStreamBroker``): a stream read by one durable consumer. The
consumer's info tells ``num_pending`` (stored, not yet delivered to it: waiting) and
``num_ack_pending`` (delivered, not yet acknowledged: in flight). The oldest waiting
message is the first one after the consumer's delivered stream sequence that its
filter matches; a direct lookup by sequence (STREAM.MSG.GET, ``next_by_subj``) reads
its stored time without delivering, acknowledging or moving anything.

This holds for both retention policies. With ``WorkQueue`` an acknowledged message
is deleted, so the stream's first message may be one in flight; with ``Limits``
(taskiq-nats's default) the stream keeps what was acknowledged too, so neither the
stream's message count nor its first message says what waits: only the consumer's
position does, which is why both are read from the consumer, never the stream.

Until a worker has created the consumer, everything the stream holds is waiting
(taskiq-nats creates it delivering from the start), counted when the stream carries
only the broker's subject. Core NATS (``NatsBroker``) stores nothing: no inspector.

Internals read here, once: the brokers' ``servers``, ``connection_kwargs``,
``stream_name``, ``stream_config``, ``subject``, ``durable``, ``consumer_config`` and
``default_consumer_name`` (taskiq-nats 0.7, the range pyproject.toml's dev extra
tests). A broker without them is reported as not inspectable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from exporter.brokers.base import BackgroundCloses, QueueStats

logger = logging.getLogger(__name__)

# The service's own connection: one attempt per inspection (the caller's timeout and
# the next scrape retry), and failures reported by the backlog, not nats-py's logger.
CONNECT_OPTIONS: dict[str, Any] = {
    "allow_reconnect": False,
    "max_reconnect_attempts": 1,
    "reconnect_time_wait": 0,
}


async def _quiet(exc: Exception) -> None:
    logger.debug("nats: %r", exc)


def consumer_name(broker: Any, *, pull: bool) -> str | None:
    """The durable consumer the broker's workers read, None if they each make an
    ephemeral one (nothing to inspect)."""
    config = broker.consumer_config
    if pull:
        return str(broker.durable)  # pull_subscribe(durable=broker.durable)
    if config is None:
        return str(broker.default_consumer_name)
    name = config.durable_name or config.name
    return None if name is None else str(name)


class NatsInspector:
    """CONSUMER.INFO and, while messages wait, one STREAM.MSG.GET."""

    def __init__(self, broker: Any, *, consumer: str) -> None:
        self._servers = broker.servers
        self._kwargs: dict[str, Any] = {
            **{k: v for k, v in broker.connection_kwargs.items() if not k.endswith("_cb")},
            **CONNECT_OPTIONS,
            "error_cb": _quiet,
        }
        self._stream = str(broker.stream_config.name or broker.stream_name)
        self._subject = str(broker.subject)
        self._consumer = consumer
        self._client: Client | None = None
        self._closing = BackgroundCloses()

    async def _jetstream(self) -> JetStreamContext:
        if self._client is None or not self._client.is_connected:
            self._drop()
            self._client = await nats.connect(self._servers, **self._kwargs)
        return self._client.jetstream()

    async def inspect(self) -> list[QueueStats]:
        try:
            return [await self._one(await self._jetstream())]
        except BaseException:
            self._drop()
            raise

    async def _one(self, js: JetStreamContext) -> QueueStats:
        queue = self._stream
        try:
            info = await js.consumer_info(self._stream, self._consumer)
        except NotFoundError:  # no stream, or no worker has created the consumer yet
            return await self._unconsumed(js)
        pending = info.num_pending or 0
        age = None
        if pending and info.delivered is not None:
            subject = _filter(info)
            if subject is not None:
                age = await self._age(js, info.delivered.stream_seq + 1, subject)
        return QueueStats(
            queue=queue, messages=pending, oldest_age_seconds=age, in_flight=info.num_ack_pending
        )

    async def _unconsumed(self, js: JetStreamContext) -> QueueStats:
        try:
            stream = await js.stream_info(self._stream)
        except NotFoundError:  # nothing was ever sent
            return QueueStats(queue=self._stream, messages=0, in_flight=0)
        if list(stream.config.subjects or []) != [self._subject]:
            return QueueStats(queue=self._stream, messages=None, in_flight=0)
        count = stream.state.messages
        age = await self._age(js, stream.state.first_seq, self._subject) if count else None
        return QueueStats(queue=self._stream, messages=count, oldest_age_seconds=age, in_flight=0)

    async def _age(self, js: JetStreamContext, seq: int, subject: str) -> float | None:
        try:
            message = await js.get_msg(self._stream, seq=seq, subject=subject, next=True)
        except NotFoundError:  # taken or expired since the consumer's info
            return None
        if message.time is None:
            return None
        return max(0.0, time.time() - message.time.timestamp())

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            self._closing.add(client.close())

    async def close(self) -> None:
        self._drop()
        await self._closing.wait()


def _filter(info: ConsumerInfo) -> str | None:
    """The subject the consumer takes (">" for all), None for several subjects."""
    config = info.config
    if config.filter_subject:
        return str(config.filter_subject)
    subjects = list(config.filter_subjects or [])
    if len(subjects) > 1:
        return None
    return str(subjects[0]) if subjects else ">"


def nats_inspector(broker: Any, *, pull: bool) -> NatsInspector | None:
    """The inspector for a taskiq-nats JetStream broker, None when the broker lacks
    what this module reads (another taskiq-nats version) or its workers each read an
    ephemeral consumer."""
    try:
        consumer = consumer_name(broker, pull=pull)
        inspector = NatsInspector(broker, consumer=consumer or "")
    except AttributeError as exc:
        logger.warning("this taskiq-nats broker is not the one this exporter knows: %r", exc)
        return None
    if consumer is None:
        logger.warning("the broker's workers read ephemeral consumers: nothing to inspect")
        return None
    return inspector
