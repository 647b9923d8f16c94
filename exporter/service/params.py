"""Query parameters: pydantic models parse and validate them before anything reaches
the database; every failure becomes one 400 message naming the parameter and
what it accepts (the field's description, also shown in /openapi.json)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from starlette.datastructures import QueryParams

from exporter.rows import TaskStatus
from exporter.service.errors import BadRequest
from exporter.store.models import TASK_NAME_MAX

MIN_DATE = datetime(1970, 1, 1, tzinfo=UTC)
# The largest BIGINT (PostgreSQL) and INTEGER (SQLite): a row id beyond it fails in
# the driver, not in the query. detail.py bounds the path's ids the same way.
MAX_ROW_ID = 2**63 - 1
MAX_DATE = datetime(9000, 1, 1, tzinfo=UTC)
Q = TypeVar("Q", bound=BaseModel)


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 with or without an offset; naive means UTC."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None
    if not MIN_DATE <= parsed < MAX_DATE:
        raise ValueError("out of range")
    return parsed


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL character")
    return value


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(parse_datetime),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
TaskName = Annotated[str, BeforeValidator(_no_nul), Field(min_length=1, max_length=TASK_NAME_MAX)]
STATUSES = ", ".join(s.value for s in TaskStatus)

# Search. The error text's lower bound is pg_trgm's: a shorter one has no trigram
# and could not use the index. Pages of a search stop at SEARCH_WINDOW rows (the
# cursor goes further): an OFFSET over matches costs what it skips.
ERROR_MIN, ERROR_MAX = 3, 200
PARAM_FILTERS_MAX, PARAM_KEY_MAX, PARAM_VALUE_MAX = 5, 100, 200
SEARCH_WINDOW = 10_000
SearchText = Annotated[
    str, BeforeValidator(_no_nul), Field(min_length=ERROR_MIN, max_length=ERROR_MAX)
]
ParamValue = Annotated[
    str, BeforeValidator(_no_nul), Field(min_length=1, max_length=PARAM_VALUE_MAX)
]
# param.user_id=42, or param[user_id]=42 (OpenAPI's deepObject style).
_PARAM_NAME = re.compile(r"param\.(.*)|param\[(.*)\]", re.DOTALL)
_POSITION = re.compile(r"0|[1-9][0-9]?")
PARAM_VALUE = f"1 to {PARAM_VALUE_MAX} characters"
PARAM_KEYS = (
    f"a keyword argument's name (a Python identifier of 1 to {PARAM_KEY_MAX} characters) "
    "or a positional argument's index (0 to 99)"
)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsQuery(_Query):
    time_window: int = Field(24, ge=1, le=720, description="whole hours, from 1 to 720")


class HistoryQuery(_Query):
    task_name: TaskName | None = Field(
        None, description=f"an exact task name, 1 to {TASK_NAME_MAX} characters"
    )
    status: TaskStatus | None = Field(None, description=f"one of {STATUSES}")
    start_date: IsoDateTime | None = Field(
        None, description="ISO 8601 date-time, inclusive (no offset means UTC)"
    )
    end_date: IsoDateTime | None = Field(
        None, description="ISO 8601 date-time after start_date, exclusive (no offset means UTC)"
    )
    page: int | None = Field(
        None, ge=1, le=10_000_000, description="an integer from 1 to 10000000 (default 1)"
    )
    page_size: int = Field(50, ge=1, le=200, description="an integer from 1 to 200")
    cursor: str | None = Field(
        None, max_length=200, description="the next_cursor of a previous page (instead of page)"
    )
    error: SearchText | None = Field(
        None,
        description=f"{ERROR_MIN} to {ERROR_MAX} characters, found case-insensitively inside "
        "the error messages of failed attempts (% and _ match themselves)",
    )
    param: dict[str, ParamValue] = Field(
        default_factory=dict,
        description=f"up to {PARAM_FILTERS_MAX} filters param.<key>=<value>: <key> "
        f"{PARAM_KEYS}; <value> {PARAM_VALUE} that the argument equals, as text or as the "
        "number, true, false or null it spells",
    )

    @property
    def searching(self) -> bool:
        return self.error is not None or bool(self.param)

    @model_validator(mode="after")
    def _consistent(self) -> HistoryQuery:
        if self.start_date and self.end_date and self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        if self.cursor is not None and self.page is not None:
            raise ValueError("page and cursor cannot be combined: pass one of them")
        if self.searching and (self.page or 1) * self.page_size > SEARCH_WINDOW:
            raise ValueError(
                f"with error or param filters, page x page_size must be at most {SEARCH_WINDOW}: "
                "follow next_cursor to read further"
            )
        if self.cursor is not None:
            decode_cursor(self.cursor)
        return self


class EventsQuery(_Query):
    task_name: TaskName | None = Field(
        None, description=f"an exact task name, 1 to {TASK_NAME_MAX} characters (its events only)"
    )
    status: TaskStatus | None = Field(
        None, description=f"one of {STATUSES} (events with that status only)"
    )
    since: IsoDateTime | None = Field(
        None, description="an ISO 8601 date-time, the data.updated_at of the last event seen"
    )
    token: str | None = Field(
        None, description="the API token, for browsers that cannot send an Authorization header"
    )


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise TypeError
        if not 1 <= row_id <= MAX_ROW_ID:
            raise ValueError
        return parse_datetime(stamp), row_id
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("cursor must be a next_cursor value returned by this API") from None


def _message(model: type[BaseModel], exc: ValidationError, params: QueryParams) -> str:
    err = exc.errors(include_url=False)[0]
    if not err["loc"]:
        return str(err["msg"]).removeprefix("Value error, ")
    name = str(err["loc"][0])
    field = model.model_fields.get(name)
    allowed = field.description if field and field.description else err["msg"]
    got = params.get(name, "")
    if name == "param" and len(err["loc"]) > 1:
        # One filter's value: a field of its own in the URL.
        name, allowed = f"param.{err['loc'][1]}", PARAM_VALUE
        got = str(err["input"]) if isinstance(err["input"], str) else ""
    shown = got if len(got) <= 40 else got[:40] + "..."
    return f"invalid query parameter '{name}': must be {allowed} (got {shown!r})"


def parse_query(model: type[Q], params: QueryParams) -> Q:
    """The validated query of ``model``; raises BadRequest (400) on anything else.
    An empty value counts as not given (HTML forms and Grafana variables send them)."""
    names = model.model_fields
    data: dict[str, Any] = {}
    if "param" in names:
        params, data["param"] = split_param_filters(params)
    for key in params:
        if key not in names or key == "param":
            allowed = ", ".join(n if n != "param" else "param.<key>" for n in names) or "none"
            raise BadRequest(f"unknown query parameter '{key[:40]}'; allowed: {allowed}")
        if len(params.getlist(key)) > 1:
            raise BadRequest(f"query parameter '{key}' is given more than once")
    data.update((k, v) for k, v in params.items() if v != "")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(_message(model, exc, params)) from None


def split_param_filters(params: QueryParams) -> tuple[QueryParams, dict[str, str]]:
    """The query without its ``param.<key>`` filters, and those filters by key
    (an empty value counts as not given)."""
    rest: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in params.multi_items():
        match = _PARAM_NAME.fullmatch(name)
        if match is None:
            rest.append((name, value))
            continue
        key = match[1] if match[1] is not None else match[2]
        shown = name if len(name) <= 60 else name[:60] + "..."
        if not (key.isidentifier() and len(key) <= PARAM_KEY_MAX) and not _POSITION.fullmatch(key):
            raise BadRequest(
                f"invalid query parameter '{shown}': <key> in param.<key> must be {PARAM_KEYS}"
            )
        if key in seen:
            raise BadRequest(f"query parameter 'param.{key}' is given more than once")
        seen.add(key)
        if value != "":
            found[key] = value
    if len(found) > PARAM_FILTERS_MAX:
        raise BadRequest(f"at most {PARAM_FILTERS_MAX} param.<key> filters may be combined")
    return QueryParams(rest), found


class NoQuery(_Query):
    """Endpoints without query parameters still refuse unknown ones."""
