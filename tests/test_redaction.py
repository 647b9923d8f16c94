"""Which keys and which pieces of text are secret, and what the stored params and
error texts keep of them (exporter/middleware/redaction.py and sanitize.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.middleware.redaction import KeyRule, TextRedactor, key_words, scrub
from exporter.middleware.sanitize import REDACTED, ParamsEncoder, describe_exception
from exporter.settings import DEFAULT_SECRET_KEYS, ExporterSettings

RULE = KeyRule(DEFAULT_SECRET_KEYS)


def encoder(keys: tuple[str, ...] = DEFAULT_SECRET_KEYS, **tasks: Any) -> ParamsEncoder:
    enc = ParamsEncoder(secret_keys=keys, max_bytes=16_384)
    enc.find_task = tasks.get
    return enc


def encode(
    *args: Any, _task: str | None = None, _enc: ParamsEncoder | None = None, **kwargs: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((_enc or encoder()).encode(args, kwargs, _task))
    return doc


# The key-name rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("X-Api-Key", ("x", "api", "key")),
        ("clientSecret", ("client", "secret")),
        ("DB_PASS2", ("db", "pass", "2")),
        ("HTTPAuthorization", ("http", "authorization")),
        ("APIKey", ("api", "key")),
        ("motDePasse.été", ("mot", "de", "passe", "été")),
    ],
)
def test_keys_are_split_into_lower_case_words(key: str, words: tuple[str, ...]) -> None:
    assert key_words(key) == words


@pytest.mark.parametrize(
    "key",
    [
        # the list's words, whole, in any case and spelling of separators
        "password", "Password", "PASSWORD", "passwd", "pwd", "pass", "passphrase",
        "secret", "token", "jwt", "auth", "authorization", "cookie", "session",
        "signature", "dsn", "credential", "credentials", "connection_string",
        "api_key", "apiKey", "API-KEY", "apikey", "access_key", "private_key",
        "client_secret", "clientSecret",
        # within longer keys
        "db_pass", "DB_PASSWORD", "X-Api-Key", "x_api_key", "refresh_token",
        "accessToken", "Set-Cookie", "session_id", "sentry_dsn", "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY", "user_credentials", "webhook_signature", "X-Auth-Token",
        "auth_header", "oauth_token", "db.password", "Proxy-Authorization",
        # plurals, and long words glued to others
        "passwords", "tokens", "api_keys", "cookies", "dbpassword", "mysecret",
        "xapikey", "csrftoken", "sessionid", "userpasswd",
        # over-masked, as docs/security.md says
        "pass_through", "auth_url",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert RULE(key), key


@pytest.mark.parametrize(
    "key",
    [
        # a listed word inside another word (short entries match whole words only)
        "passenger", "compass", "bypass_cache", "author", "authority", "tokenizer",
        "tokenizers", "secretary", "possession", "dsname",
        # measures and descriptors of a secret, not the secret (DESCRIPTOR_WORDS)
        "max_tokens", "prompt_tokens", "completion_tokens", "total_tokens",
        "token_count", "session_count", "session_timeout", "token_type", "auth_type",
        "password_length", "min_password_length", "signature_method", "token_ttl",
        # keys named like other things
        "key", "cache_key", "primary_key", "keys", "user", "username", "email", "id",
        "host", "url", "options", "private", "access", "client_id",
    ],
)  # fmt: skip
def test_keys_that_are_not_secret(key: str) -> None:
    assert not RULE(key), key


def test_an_entry_itself_is_secret_even_when_it_reads_like_a_descriptor() -> None:
    rule = KeyRule(("max_size",))
    assert rule("max_size")
    assert not rule("max_size_limit")  # "limit" describes it


def test_configured_entries_are_stored_as_words() -> None:
    keys = ExporterSettings(secret_keys=("sessionToken", "X-Api-Key", "SSN", " ", "ssn"))
    assert keys.secret_keys == ("session_token", "x_api_key", "ssn")
    rule = KeyRule(keys.secret_keys)
    assert rule("user_session_token")
    assert rule("customerSSN")
    assert not rule("password")  # the list replaces the defaults


def test_the_default_list_has_the_documented_words() -> None:
    for word in ("pass", "pwd", "passphrase", "credential", "credentials", "dsn",
                 "connection_string", "auth", "session", "client_secret", "access_key",
                 "signature"):  # fmt: skip
        assert word in DEFAULT_SECRET_KEYS


# Params ---------------------------------------------------------------------


def login(user: str, password: str, *rest: Any, retries: int = 3) -> None:
    """A task function: its second parameter is a password."""


def upload(path: str, *tokens: str) -> None:
    """Every argument after the first is a token."""


def test_positional_arguments_are_checked_under_their_parameter_names() -> None:
    enc = encoder(**{"app:login": login, "app:upload": upload})
    doc = encode("alice", "hunter2", "extra", _task="app:login", _enc=enc)
    assert doc == {"args": ["alice", REDACTED, "extra"], "kwargs": {}, "_redacted": ["args[1]"]}
    # The same call with the password as a keyword.
    doc = encode("alice", password="hunter2", _task="app:login", _enc=enc)
    assert doc == {"args": ["alice"], "kwargs": {"password": REDACTED},
                   "_redacted": ["kwargs.password"]}  # fmt: skip
    doc = encode("/tmp/x", "t1xx", "t2xx", _task="app:upload", _enc=enc)
    assert doc["args"] == ["/tmp/x", REDACTED, REDACTED]
    # Too few arguments to reach the password: nothing to mask.
    assert encode("alice", _task="app:login", _enc=enc) == {"args": ["alice"], "kwargs": {}}


def test_the_signature_is_looked_up_once_per_task_name() -> None:
    calls: list[str] = []
    enc = encoder()

    def find(name: str) -> Any:
        calls.append(name)
        return login if name == "app:login" else None

    enc.find_task = find
    for _ in range(3):
        enc.encode(["a", "b"], {}, "app:login")
        enc.encode(["a", "b"], {}, "app:unknown")
    assert calls == ["app:login", "app:unknown"]
    assert enc.positional("app:unknown") is None


def test_pairs_in_lists_are_masked() -> None:
    doc = encode(
        headers=[["Authorization", "Bearer abc"], ["Accept", "text/html"]],
        creds=[("password", "pw-1"), ("user", "ann")],
        flags=[("auth", True)],  # booleans cannot be secrets
    )
    assert doc["kwargs"] == {
        "headers": [["Authorization", REDACTED], ["Accept", "text/html"]],
        "creds": [["password", REDACTED], ["user", "ann"]],
        "flags": [["auth", True]],
    }
    assert doc["_redacted"] == ["kwargs.headers[0][1]", "kwargs.creds[0][1]"]


@dataclasses.dataclass
class Database:
    host: str
    password: str = dataclasses.field(repr=False)


class Account(pydantic.BaseModel):
    name: str
    api_key: str
    db: Database


def test_dataclasses_and_pydantic_models_are_stored_as_dicts_and_masked() -> None:
    account = Account(name="ann", api_key="k-123", db=Database("db1", "pw-2"))
    doc = encode(Database("db0", "pw-1"), nested={"account": account})
    assert doc["args"] == [{"host": "db0", "password": REDACTED}]
    assert doc["kwargs"]["nested"]["account"] == {
        "name": "ann",
        "api_key": REDACTED,
        "db": {"host": "db1", "password": REDACTED},
    }
    # Nothing secret: converted all the same, no marker.
    doc = encode(Database("db0", None))  # type: ignore[arg-type]
    assert doc == {"args": [{"host": "db0", "password": None}], "kwargs": {}}


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("postgresql://app:s3cr3t@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:p%40ss@cache/0", "redis://:***@cache/0"),
        ("see amqp://guest:gu@st@mq/ and", "see amqp://guest:***@mq/ and"),
        ("Bearer eyJhbGciOi.J9x", "Bearer ***"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("Authorization: Token abc.def", "Authorization: ***"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic ***"),
        ("password=hunter2&user=ann", "password=***&user=ann"),
        ("host=db user=app password=pw dbname=x", "host=db user=app password=*** dbname=x"),
        ('{"api_key": "k-9", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("{'token':'t-1'}", "{'token':'***'}"),
        ("X-Api-Key: abc", "X-Api-Key: ***"),
        ("https://x.io/cb?access_token=tk&state=1", "https://x.io/cb?access_token=***&state=1"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----",
         "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----"),
        ("-----BEGIN PRIVATE KEY-----\nMIIBOgIBAAJBAKcut", "-----BEGIN PRIVATE KEY-----***"),
    ],
)  # fmt: skip
def test_value_patterns_are_masked_anywhere(value: str, stored: str) -> None:
    doc = encode(value, nested={"list": [value]})
    assert doc["args"] == [stored]
    assert doc["kwargs"]["nested"]["list"] == [stored]
    assert doc["_redacted"] == ["args[0]", "kwargs.nested.list[0]"]


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/orders?id=12&page=2",
        "mail ann@example.com about https://example.com",
        "basic plan, Basic support",
        "the scheduler ran at 12:30",
        "token expired: retry later",
        "a == b",
        "key=value",
        "-----BEGIN CERTIFICATE-----",
    ],
)
def test_ordinary_text_is_kept(value: str) -> None:
    assert encode(value) == {"args": [value], "kwargs": {}}


def test_a_secret_key_masks_its_whole_value() -> None:
    doc = encode(credentials={"user": "ann", "token": "t"}, auth=("ann", "pw"), pin_token=1234,
                 use_auth=True, session=None)  # fmt: skip
    assert doc["kwargs"] == {"credentials": REDACTED, "auth": REDACTED, "pin_token": REDACTED,
                             "use_auth": True, "session": None}  # fmt: skip
    assert doc["_redacted"] == ["kwargs.credentials", "kwargs.auth", "kwargs.pin_token"]


def test_the_marker_survives_truncation() -> None:
    enc = ParamsEncoder(secret_keys=DEFAULT_SECRET_KEYS, max_bytes=1_000)
    doc = json.loads(enc.encode(["x" * 10_000], {"password": "pw"}))
    assert doc["_truncated"] is True
    assert doc["_redacted"] == ["kwargs.password"]
    assert '"pw"' not in doc["preview"]


def test_params_without_secrets_have_no_marker() -> None:
    doc = encode(1, "a", b={"c": [1.5, None]})
    assert doc == {"args": [1, "a"], "kwargs": {"b": {"c": [1.5, None]}}}


# Error texts ----------------------------------------------------------------


def raise_chain(password: str) -> None:
    try:
        raise ConnectionError(f"cannot connect to postgresql://app:{password}@db/app")
    except ConnectionError as exc:
        error = RuntimeError(f"login failed with {password!r}")
        error.add_note(f"hint: the password was {password}")
        raise error from exc


def test_an_error_that_repeats_an_argument_is_scrubbed_of_it() -> None:
    enc = encoder(**{"app:login": login})
    redact = enc.error_redactor(["alice", "s3cr3t-pw"], {}, "app:login")
    with pytest.raises(RuntimeError) as info:
        raise_chain("s3cr3t-pw")
    message, tb = describe_exception(
        info.value, max_message_bytes=2_000, max_traceback_bytes=20_000, redact=redact
    )
    assert "s3cr3t-pw" not in message + tb
    assert message == "RuntimeError: login failed with '***'"
    assert "postgresql://app:***@db/app" in tb  # the cause
    assert "hint: the password was ***" in tb  # the note
    assert "alice" in tb or "raise_chain" in tb  # the traceback itself is kept


def test_a_url_password_in_an_error_is_masked_without_params() -> None:
    redact = encoder().error_redactor([], {})
    with pytest.raises(RuntimeError) as info:
        raise_chain("pw-from-nowhere")
    message, tb = describe_exception(
        info.value, max_message_bytes=2_000, max_traceback_bytes=20_000, redact=redact
    )
    assert "postgresql://app:***@db/app" in tb
    # Not a pattern, not an argument: it cannot be known to be a secret.
    assert "pw-from-nowhere" in message


def test_short_values_are_not_scrubbed_from_error_text() -> None:
    assert scrub("line 123 in pay", ["123", "pay"]) == "line 123 in pay"
    assert scrub("login failed for hunter2", ["hunter2"]) == "login failed for ***"
    # The repr form of a value (quotes and backslashes escaped) is found too.
    assert scrub(r"bad 'pa\\ss'", ["pa\\ss"]) == "bad '***'"


def test_a_failing_redaction_stores_no_error_text() -> None:
    def broken(text: str) -> str:
        raise ValueError("no")

    message, tb = describe_exception(
        RuntimeError("x"), max_message_bytes=200, max_traceback_bytes=2_000, redact=broken
    )
    assert message == tb == "RuntimeError: <not stored: redaction failed>"


# The fast path's first look never misses what the patterns find --------------

FRAGMENTS = st.sampled_from(
    ["password", "Pass", "token", "api", "_key", "X-Api-Key", "auth", "dsn", "Bearer", "Basic",
     "dXNlcjpwdw==", "-----BEGIN PRIVATE KEY-----", "://", "u:p@h", "@", "=", ":", ": ", " ",
     "\n", "\t", '"', "'", "\\", "abc", "12", "max_", "x.y", "-"]
)  # fmt: skip


@settings(max_examples=3_000, deadline=None)
@given(st.lists(FRAGMENTS, max_size=12).map("".join))
def test_suspect_is_true_whenever_redact_changes_the_text(text: str) -> None:
    redactor = TextRedactor(RULE)
    if redactor.redact(text) != text:
        assert redactor.suspect(text)
        assert redactor.suspect(orjson.dumps([text]).decode(), json=True)
