#!/usr/bin/env bash
# Install what the demo needs (Debian packages, Docker engine, Python deps, offline images),
# then run it: the project's Jenkins-compatible controller plus the local engine; two builds
# that run nested docker get dind agents, which are reaped when idle; nothing is left behind.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_all
cd "$REPO"
python -m agentpool_testing.demo "$@"
