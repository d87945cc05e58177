# Shared set-up for scripts/demo.sh and scripts/test.sh: make a fresh Debian machine (as root)
# ready to run agentpool, idempotently. Sourced, not run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AGENTPOOL_VENV:-$REPO/.venv}"
STARTED_DOCKERD=""

log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "need root to install ${missing[*]}" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_system_packages() {
    # systemd: systemd-analyze for the unit test; busybox-static: a tiny offline test image.
    local pkgs=(docker.io iptables debootstrap openjdk-17-jdk-headless ca-certificates systemd busybox-static chromium)
    command -v python3 >/dev/null || pkgs+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
    apt_install "${pkgs[@]}"
}

install_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.agentpool-installed"
    # agentpool with its dev extras, and agentpool-testing (the controller, the demo, the
    # test helpers: a distribution of its own so that agentpool itself never ships them)
    if [ ! -f "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ] || [ "$REPO/testing/pyproject.toml" -nt "$stamp" ]; then
        log "installing Python dependencies"
        "$VENV/bin/pip" install -q --upgrade pip >/dev/null
        "$VENV/bin/pip" install -q -e "$REPO[dev]" -e "$REPO/testing"
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# Start dockerd when no engine answers; stop it again when the calling script exits.
ensure_dockerd() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    log "starting dockerd (log: /tmp/agentpool-dockerd.log)"
    setsid dockerd >/tmp/agentpool-dockerd.log 2>&1 </dev/null &
    STARTED_DOCKERD=$!
    trap stop_dockerd EXIT
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "dockerd did not answer within 30 s; its log:" >&2
    tail -n 30 /tmp/agentpool-dockerd.log >&2
    return 1
}

# Only the dockerd this script started, by its PID: dockerd stops its own containerd and shims
# (other engines' shims on this machine are none of our business). Waited for, bounded.
stop_dockerd() {
    if [ -n "$STARTED_DOCKERD" ]; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
            log "dockerd (pid $STARTED_DOCKERD) did not stop within 30 s: killing it"
            kill -KILL "$STARTED_DOCKERD" 2>/dev/null || true
        fi
        wait "$STARTED_DOCKERD" 2>/dev/null || true
        STARTED_DOCKERD=""
    fi
}

# `agentpool` on PATH after the quick start: as root a symlink in /usr/local/bin (replacing only
# another checkout's), else the export to type; said again when the script ends.
CLI_NOTE=""
link_cli() {
    local target="$VENV/bin/agentpool" link=/usr/local/bin/agentpool
    if [ "$(id -u)" = 0 ] && { [ ! -e "$link" ] || [[ "$(readlink "$link")" == */bin/agentpool ]]; }; then
        ln -sfn "$target" "$link"
        CLI_NOTE="agentpool is $target, on PATH as $link"
    else
        CLI_NOTE="agentpool is $target: export PATH=\"$VENV/bin:\$PATH\" to type just agentpool"
    fi
}

finish() {
    local rc=$?
    stop_dockerd
    [ -z "$CLI_NOTE" ] || log "$CLI_NOTE"
    return "$rc"
}

build_artifacts() {
    if [ -x "$REPO/scripts/build-agent-jar" ]; then
        log "building the stub agent jar"
        "$REPO/scripts/build-agent-jar"
    fi
    if [ -x "$REPO/images/build" ]; then
        log "building the dind agent image (offline)"
        "$REPO/images/build" --test-images
    fi
}

setup_all() {
    install_system_packages
    install_python
    link_cli
    ensure_dockerd
    trap finish EXIT
    build_artifacts
}
