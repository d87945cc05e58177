"""One line per record, logfmt or JSON, secrets masked wherever they appear."""

from __future__ import annotations

import io
import json
import logging

import pytest

from agentpool.logs import redact, register_secret, setup_logging

TOKEN = "11aa22bb33cc44dd55ee66ff"


def _emit(fmt: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    setup_logging(fmt, "debug", stream=stream)  # type: ignore[arg-type]
    logging.getLogger("agentpool.test").info(*args, extra=extra)  # type: ignore[arg-type]
    return stream.getvalue()


def test_logfmt_is_one_line_with_fields() -> None:
    out = _emit(
        "kv", "provisioned %s", "agent-1", pool="dind", reason="demand", detail='2 items "waiting"\nnow'
    )
    assert out.count("\n") == 1
    line = out.rstrip("\n")
    assert " level=info logger=agentpool.test " in line
    assert 'msg="provisioned agent-1"' in line
    assert "pool=dind reason=demand" in line
    assert 'detail="2 items \\"waiting\\"\\nnow"' in line
    assert line.startswith("ts=") and line.split(" ", 1)[0].endswith("Z")


def test_json_is_one_object_per_line() -> None:
    out = _emit("json", "reaped %s", "agent-2", pool="dind", idle_s=301.5)
    assert out.count("\n") == 1
    record = json.loads(out)
    assert record["msg"] == "reaped agent-2"
    assert record["level"] == "info"
    assert record["pool"] == "dind"
    assert record["idle_s"] == 301.5


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_secret_is_masked_in_message_args_and_fields(fmt: str) -> None:
    register_secret(TOKEN)
    out = _emit(fmt, "calling %s with token %s", "http://jenkins/", TOKEN, header=f"Basic x:{TOKEN}")
    assert TOKEN not in out
    assert out.count("***") == 2


def test_secret_is_masked_in_tracebacks_and_url_encoded_forms() -> None:
    secret = "p@ss/w0rd"
    register_secret(secret)
    stream = io.StringIO()
    setup_logging("kv", "info", stream=stream)
    try:
        raise RuntimeError(f"GET http://u:p%40ss%2Fw0rd@jenkins/ failed for {secret}")
    except RuntimeError:
        logging.getLogger("agentpool.test").exception("request failed")
    out = stream.getvalue()
    assert "RuntimeError" in out
    assert secret not in out and "p%40ss%2Fw0rd" not in out
    assert out.count("\n") == 1  # the traceback is escaped into the one line


def test_redact_and_empty_secret() -> None:
    register_secret("")
    assert redact("nothing to hide") == "nothing to hide"
    register_secret("abc123")
    assert redact("x=abc123;y=abc123") == "x=***;y=***"


def test_setup_logging_replaces_its_handler_and_checks_arguments() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("kv", "info", stream=first)
    setup_logging("json", "warning", stream=second)
    log = logging.getLogger("agentpool.test")
    log.info("dropped below warning")
    log.warning("kept")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "kept"
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("xml", "info")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("kv", "loud")


def test_forget_secret_stops_masking_it() -> None:
    from agentpool.logs import forget_secret, redact, register_secret

    register_secret("agent-secret-1234")
    register_secret("other-secret-5678")
    assert redact("a agent-secret-1234 b other-secret-5678") == "a *** b ***"
    forget_secret("agent-secret-1234")
    assert redact("a agent-secret-1234 b other-secret-5678") == "a agent-secret-1234 b ***"
