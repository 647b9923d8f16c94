"""What reaches the store from a task's arguments and errors."""

from __future__ import annotations

import collections
import enum
import json

from exporter.middleware.sanitize import (
    REDACTED,
    ParamsEncoder,
    cap_text,
    clean_text,
    describe_exception,
)
from exporter.settings import DEFAULT_SECRET_KEYS


def encoder(max_bytes: int = 16_384, keys: tuple[str, ...] = DEFAULT_SECRET_KEYS) -> ParamsEncoder:
    return ParamsEncoder(secret_keys=keys, max_bytes=max_bytes)


def test_secrets_are_redacted_at_any_depth() -> None:
    params = encoder().encode(
        ["public", {"nested": {"Password": "p1", "list": [{"api-key": "k"}]}}],
        {"user": "ann", "config": {"DB_PASSWORD": "p2", "Authorization": "Bearer x"},
         "access_token": "t", "session_cookie": "c", "private_key": "pk", "apikey": "a"},
    )  # fmt: skip
    doc = json.loads(params)
    assert doc["args"][0] == "public"
    assert doc["args"][1]["nested"]["Password"] == REDACTED
    assert doc["args"][1]["nested"]["list"][0]["api-key"] == REDACTED
    kwargs = doc["kwargs"]
    assert kwargs["user"] == "ann"
    assert kwargs["config"] == {"DB_PASSWORD": REDACTED, "Authorization": REDACTED}
    for key in ("access_token", "session_cookie", "private_key", "apikey"):
        assert kwargs[key] == REDACTED
    for secret in ("p1", "p2", "Bearer x", '"k"', '"t"', '"pk"'):
        assert secret not in params


def test_secret_keys_are_configurable() -> None:
    doc = json.loads(encoder(keys=("ssn",)).encode([], {"ssn": "123", "password": "kept"}))
    assert doc["kwargs"] == {"ssn": REDACTED, "password": "kept"}


def test_values_json_cannot_hold_are_stored_as_repr() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "<Custom 42>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    doc = json.loads(
        encoder().encode(
            [Custom(), b"\x00\xff", {1, 2}, float("nan"), 2**80, Broken()], {"when": object}
        )
    )
    assert doc["args"][0] == "<Custom 42>"
    assert doc["args"][1] == "b'\\x00\\xff'"
    assert sorted(doc["args"][2]) == [1, 2]
    assert doc["args"][3] == "nan"
    assert doc["args"][4] == str(2**80)
    assert doc["args"][5] == "<unrepresentable Broken>"
    assert doc["kwargs"]["when"] == "<class 'object'>"


def test_subclasses_of_plain_types_are_stored_as_their_values() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Ratio(float):
        pass

    class Config(collections.UserDict[str, object]):
        pass

    doc = json.loads(
        encoder().encode(
            (Color.RED, Level.HIGH, Ratio(0.5), Ratio("inf"), (1, [2, ("x",)])),
            collections.OrderedDict(
                [(Color.RED, 1), ("opts", collections.defaultdict(int, token="t", n=2)),
                 ("cfg", Config(password="p", keep="k")), ("frozen", frozenset({"a"}))]
            ),
        )
    )  # fmt: skip
    assert doc["args"] == ["red", 3, 0.5, "inf", [1, [2, ["x"]]]]
    assert doc["kwargs"] == {
        "red": 1,
        "opts": {"token": REDACTED, "n": 2},
        "cfg": {"password": REDACTED, "keep": "k"},
        "frozen": ["a"],
    }


def test_deep_nesting_is_cut_not_a_recursion_error() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(5_000):
        child: list[object] = []
        node.append(child)
        node = child
    text = encoder().encode([deep], {})
    assert "<max depth>" in text


def test_huge_params_are_capped_with_a_visible_marker() -> None:
    text = encoder(max_bytes=1_000).encode(["x" * 100_000], {})
    doc = json.loads(text)
    assert doc["_truncated"] is True
    assert doc["original_bytes"] > 100_000
    assert "[truncated" in doc["preview"]
    assert len(text.encode()) < 1_000


def test_text_for_postgres_has_no_nul_and_no_lone_surrogates() -> None:
    raw = b"caf\xe9 \x00 end".decode("utf-8", "surrogateescape")
    cleaned = clean_text(raw)
    cleaned.encode("utf-8")  # would raise on a lone surrogate
    assert "\x00" not in cleaned
    assert cleaned.startswith("caf")
    assert cleaned.endswith("end")


def test_exception_whose_str_raises_is_described() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise ValueError("str() is broken")

    try:
        raise Weird()
    except Weird as exc:
        message, tb = describe_exception(exc, max_message_bytes=200, max_traceback_bytes=5_000)
    assert message.startswith("Weird: <str() failed")
    assert "Traceback (most recent call last)" in tb


def test_traceback_cap_keeps_the_end() -> None:
    def fail() -> None:
        try:
            raise ValueError("an earlier, very long error " + "x" * 10_000)
        except ValueError as first:
            raise LookupError("the real cause") from first

    try:
        fail()
    except LookupError as exc:
        message, tb = describe_exception(exc, max_message_bytes=100, max_traceback_bytes=2_000)
    assert message == "LookupError: the real cause"
    assert "[truncated" in tb
    assert tb.rstrip().endswith("LookupError: the real cause")
    assert tb.startswith("Traceback")
    assert len(tb.encode()) < 2_200


def test_cap_text_counts_bytes_not_characters() -> None:
    capped = cap_text("é" * 1_000, 100)
    assert capped.startswith("é" * 50)
    assert capped.endswith("[truncated 1900 bytes]")
