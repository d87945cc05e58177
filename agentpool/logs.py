"""One log line per record, logfmt or JSON, with every registered secret masked.

agentpool runs unattended; its log is how an operator learns why an agent was provisioned,
reaped or not started. Lines are machine-parsable (``key=value`` or JSON) so they can be
grepped and shipped. The Jenkins token and the agents' secrets must never reach the log,
whatever code path formats them (an exception text, a URL, an ``extra`` field): each secret
is registered once with :func:`register_secret` and replaced by ``***`` in the message, the
fields and the traceback before the line is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from typing import Any, Literal, TextIO
from urllib.parse import quote

MASK = "***"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_ordered: tuple[str, ...] = ()

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


def register_secret(value: str) -> None:
    """Mask ``value`` (and its URL-encoded form) in every log line from now on."""
    global _ordered
    if not value:
        return
    with _secrets_lock:
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))
        # Longest first, so a secret containing another is masked whole.
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def forget_secret(value: str) -> None:
    """Stop masking ``value`` (an agent's secret once the agent is gone: the list stays short)."""
    global _ordered
    with _secrets_lock:
        _secrets.discard(value)
        _secrets.discard(quote(value, safe=""))
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _ordered
    with _secrets_lock:
        _secrets.clear()
        _ordered = ()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    redacted = redact(text)
    return value if redacted == text else redacted


class RedactingFilter(logging.Filter):
    """Masks registered secrets in the message, its arguments, ``extra`` fields and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _ordered:
            record.msg = redact(record.getMessage())
            record.args = None
            for key, value in list(record.__dict__.items()):
                if key not in _STANDARD_ATTRS:
                    record.__dict__[key] = _redact_value(value)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds")
    fields: dict[str, Any] = {
        "ts": ts.replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields["exc"] = record.exc_text
    return fields


_LOGFMT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    escaped = text.translate(_LOGFMT_ESCAPES)
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=info logger=… msg="…" key=value …`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self)
        return redact(" ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items()))


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as the logfmt form."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(json.dumps(_fields(record, self), default=str, ensure_ascii=False))


_HANDLER_MARK = "_agentpool_handler"


def setup_logging(
    fmt: Literal["kv", "json"] = "kv", level: int | str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as one ``fmt`` line, secrets masked.

    Calling it again replaces the handler it installed before (e.g. after a reload).
    """
    if fmt not in ("kv", "json"):
        raise ValueError(f"unknown log format {fmt!r}: expected 'kv' or 'json'")
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}: expected debug, info, warning or error")
        level = numeric
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
