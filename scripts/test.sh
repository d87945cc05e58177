#!/usr/bin/env bash
# Install what the tests need (Debian packages, Docker engine, Python deps, offline images),
# then run linters, type checks and the whole test suite against a real Docker engine.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_all
cd "$REPO"
log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "pytest"
# The end-to-end suites mostly wait on real engines: three workers overlap those waits on two
# cores. --dist loadfile keeps each module (and so its module-scoped fixture: a systemd host,
# an image agent) on one worker; xdist's loadgroup does not group under pytest 9 here.
python -m pytest -n "${AGENTPOOL_TEST_WORKERS:-3}" --dist loadfile "$@"
