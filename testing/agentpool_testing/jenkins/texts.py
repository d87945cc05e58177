"""Jenkins' user-visible texts: time spans and the queue's ``why`` messages.

Provisioners parse ``why`` (the only place a Pipeline item's label appears), so these
strings must be byte-for-byte what Jenkins' English ``Messages.properties`` produce,
curly quotes (U+2018/U+2019) included.
"""

from __future__ import annotations

ONE_SECOND_MS = 1000
ONE_MINUTE_MS = 60 * ONE_SECOND_MS
ONE_HOUR_MS = 60 * ONE_MINUTE_MS
ONE_DAY_MS = 24 * ONE_HOUR_MS
ONE_MONTH_MS = 30 * ONE_DAY_MS
ONE_YEAR_MS = 365 * ONE_DAY_MS


def _number(value: float) -> str:
    """Java ``MessageFormat`` prints 1.0f as ``1`` and 4.9f as ``4.9``."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def time_span(duration_ms: int) -> str:
    """``hudson.Util.getTimeSpanString``: ``4.9 sec``, ``1 min 3 sec``, ``2 hr 5 min``."""
    duration_ms = max(0, int(duration_ms))
    years, rest = divmod(duration_ms, ONE_YEAR_MS)
    months, rest = divmod(rest, ONE_MONTH_MS)
    days, rest = divmod(rest, ONE_DAY_MS)
    hours, rest = divmod(rest, ONE_HOUR_MS)
    minutes, rest = divmod(rest, ONE_MINUTE_MS)
    seconds, millis = divmod(rest, ONE_SECOND_MS)

    def pair(big: int, big_label: str, small_label: str) -> str:
        return big_label if big >= 10 else f"{big_label} {small_label}"

    if years > 0:
        return pair(years, f"{years} yr", f"{months} mo")
    if months > 0:
        return pair(months, f"{months} mo", _days(days))
    if days > 0:
        return pair(days, _days(days), f"{hours} hr")
    if hours > 0:
        return pair(hours, f"{hours} hr", f"{minutes} min")
    if minutes > 0:
        return pair(minutes, f"{minutes} min", f"{seconds} sec")
    if seconds >= 10:
        return f"{seconds} sec"
    if seconds >= 1:
        return f"{_number(seconds + (millis // 100) / 10)} sec"
    if millis >= 100:
        return f"{_number((millis // 10) / 100)} sec"
    return f"{millis} ms"


def q(name: str) -> str:
    """Jenkins quotes names and labels in messages with U+2018 … U+2019."""
    return f"\u2018{name}\u2019"


WAITING_FOR_EXECUTOR = "Waiting for next available executor"
SHUTTING_DOWN = "Jenkins is about to shut down"


def in_quiet_period(remaining_ms: int) -> str:
    if remaining_ms < 0:
        return "Finished waiting"
    return f"In the quiet period. Expires in {time_span(remaining_ms)}"


def build_in_progress(number: int, eta: str) -> str:
    return f"Build #{number} is already in progress (ETA: {eta})"


def label_has_no_nodes(label: str) -> str:
    return f"There are no nodes with the label {q(label)}"


def all_nodes_of_label_offline(label: str) -> str:
    return f"All nodes of label {q(label)} are offline"


def waiting_for_executor_on(name: str) -> str:
    return f"Waiting for next available executor on {q(name)}"


def node_offline(node: str) -> str:
    return f"{q(node)} is offline"


def node_reserved(node: str) -> str:
    return f"{q(node)} is reserved for jobs with matching label expression"


def node_not_accepting(node: str) -> str:
    return f"{q(node)} is not accepting tasks"


def node_lacks_label(node: str, label: str) -> str:
    return f"{q(node)} doesn\u2019t have label {q(label)}"
