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
# cores (tests/conftest.py keeps each slow suite and each e2e module on one worker).
python -m pytest -n "${AGENTPOOL_TEST_WORKERS:-3}" --dist loadgroup "$@"
