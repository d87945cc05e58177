"""``${VAR}`` in config paths, for ``token_file: ${CREDENTIALS_DIRECTORY}/jenkins.token``.

Under systemd the Jenkins token arrives through ``LoadCredential=`` in a directory only the
service can read, whose path systemd passes as ``$CREDENTIALS_DIRECTORY``. The config names
the file relative to it; the config loader expands the variable with :func:`expand_env`. An
unset variable is an error naming it, not a path with a literal ``$`` in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand_env(path: str, environ: Mapping[str, str] | None = None) -> str:
    """``path`` with ``$VAR`` and ``${VAR}`` replaced from the environment.

    Raises ValueError naming the variable when it is unset or empty.
    """
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        found = env.get(name, "")
        if not found:
            hint = " (systemd sets it for LoadCredential=)" if name == "CREDENTIALS_DIRECTORY" else ""
            raise ValueError(f"environment variable {name} in {path!r} is not set{hint}")
        return found

    return _VAR.sub(value, path)
