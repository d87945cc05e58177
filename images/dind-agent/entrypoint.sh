#!/bin/bash
# Entrypoint of the agentpool dind agent: a Jenkins inbound agent with its own Docker engine.
#
# Why each step exists (in the order they run):
#  1. Close inherited file descriptors > 2: whatever started the container may leak fds
#     (sockets, pipes); dockerd and every build would inherit and hold them open forever.
#  2. cgroups: dockerd needs writable cgroup filesystems to create its containers' cgroups.
#     Mount them when missing. Without --privileged, /sys and the cgroup v1 hierarchies are
#     mounted read-only: remount them read-write (`remount,bind,rw`; a plain `remount,rw` fails
#     with "mount point is busy"). On cgroup v2, move every process of ours into a child
#     cgroup so that the root cgroup has no processes and the inner dockerd can enable
#     controllers for its children ("no internal processes" rule). Warn when the devices
#     controller shares a v1 hierarchy with another one: nested containers then fail.
#  3. /tmp as tmpfs: builds write there a lot; the container's overlay root is slow and
#     leaves the rubbish in the container's writable layer.
#  4. /var/lib/docker must be a volume: overlay2 cannot stack on the container's own overlayfs
#     and dockerd would silently fall back to the very slow vfs driver. We refuse (loudly)
#     unless DIND_ALLOW_VFS=true.
#  5. Start dockerd (overlay2) in the background and wait, bounded by DIND_START_TIMEOUT,
#     until its API answers; on timeout print the tail of its log and exit non-zero.
#     In Jenkins mode the agent is started first (DIND_AGENT_FIRST, default true): it connects
#     while the engine starts, and the image's `docker` (/usr/local/bin/docker) waits, bounded,
#     until the engine is ready (markers in /run/dind-agent), so no build sees it unready.
#     Meanwhile the engine runs at nice DIND_DOCKERD_START_NICE (default 10; 0 turns it off)
#     so that the agent's JVM gets the CPU first; back to 0 once the engine answers.
#  6. Then one of the modes:
#     - PORT set: "Docker as a service". dockerd also listens on tcp://0.0.0.0:$PORT with
#       mutual TLS (certificates in $DOCKER_TLS_CERTDIR, generated at first start, or
#       supplied). Plain TCP only with DIND_INSECURE_TCP=true (loud warning). No agent.
#     - JENKINS_URL/JENKINS_SECRET/JENKINS_AGENT_NAME set: fetch the controller's own
#       agent.jar (version-matched) unless present, run the inbound agent as a child.
#     - a command given as arguments: run it with the engine available.
#     - nothing set and a TTY: an interactive shell with a working `docker`.
#     - nothing set and no TTY: just the engine, like the docker:dind image.
#  7. Shutdown: SIGTERM/SIGINT stops the agent (or command/shell), then the inner containers,
#     then dockerd, all within the 10 s `docker stop` grants. If the agent/command exits
#     first, dockerd is stopped the same way and we exit with its status. If dockerd dies,
#     the agent is stopped and we exit non-zero.
#
# Needs root (dockerd). The real jenkins/inbound-agent image runs as user jenkins: the
# Dockerfile sets USER root, and the agent runs as root too (builds control the inner docker
# daemon anyway, which is root-equivalent inside this container).
set -u

log() { printf '[dind-agent] %s\n' "$*" >&2; }
warn() { printf '[dind-agent] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[dind-agent] ERROR: %s\n' "$*" >&2
    exit 1
}
is_true() { case "${1:-}" in 1 | true | TRUE | True | yes | on) return 0 ;; *) return 1 ;; esac }
banner() {
    local line
    printf '[dind-agent] %s\n' '************************************************************************' >&2
    for line in "$@"; do printf '[dind-agent] *** %s\n' "$line" >&2; done
    printf '[dind-agent] %s\n' '************************************************************************' >&2
}

DOCKERD_LOG="${DIND_DOCKERD_LOG:-/var/log/dockerd.log}"
START_TIMEOUT="${DIND_START_TIMEOUT:-60}"
# Budget for stopping inner containers and dockerd; `docker stop` kills us after 10 s.
CONTAINER_STOP_TIMEOUT="${DIND_CONTAINER_STOP_TIMEOUT:-3}"
DOCKERD_STOP_TIMEOUT="${DIND_DOCKERD_STOP_TIMEOUT:-3}"
CHILD_STOP_TIMEOUT="${DIND_CHILD_STOP_TIMEOUT:-2}"
DOCKERD_START_NICE="${DIND_DOCKERD_START_NICE:-10}"
# Whole numbers only: they reach $(( )), where bash would evaluate anything else as code.
for _n in START_TIMEOUT CONTAINER_STOP_TIMEOUT DOCKERD_STOP_TIMEOUT CHILD_STOP_TIMEOUT; do
    case "${!_n}" in
        '' | *[!0-9]* | ?????*) die "DIND_$_n must be a whole number of seconds below 10000, got '${!_n}'" ;;
    esac
done
unset _n
case "$DOCKERD_START_NICE" in
    [0-9] | 1[0-9]) ;;
    *) die "DIND_DOCKERD_START_NICE must be a niceness from 0 to 19, got '$DOCKERD_START_NICE'" ;;
esac
TLS_CERTDIR="${DOCKER_TLS_CERTDIR:-/certs}"
AGENT_JAR="${AGENT_JAR:-/usr/local/lib/agentpool/agent.jar}"

DOCKERD_PID=""
CHILD_PID=""
# The real client: /usr/local/bin/docker is the waiting one, for builds.
REAL_DOCKER=/usr/bin/docker
STATE_DIR=/run/dind-agent
TAIL_PID=""

# Split $2 into the array named $1 at blanks, without globbing (`*` stays `*`) and without
# any other expansion: the word lists REMOTING_OPTS, JAVA_OPTS, DOCKERD_OPTS, DOCKER_TLS_SAN.
split_words() {
    local -n into=$1
    into=()
    [ -n "${2:-}" ] || return 0
    # -d '': the whole value, newlines included (they separate words like blanks do).
    read -r -d '' -a into <<<"$2" || true
}

# True when the last mount on $1 (exactly) is read-only. (`test -w` cannot tell for /proc/sys:
# procfs refuses write access to its directories whatever the mount says.)
mounted_read_only() {
    awk -v m="$1" '$2 == m { opts = $4 } END { exit !(opts ~ /^ro(,|$)/) }' /proc/mounts
}

# --- 1. file descriptors ------------------------------------------------------------------
close_inherited_fds() {
    local fd n
    for fd in "/proc/$$/fd/"*; do
        n="${fd##*/}"
        # 255 is bash's own handle on this script (close-on-exec, never inherited).
        if [ "$n" -gt 2 ] && [ "$n" != 255 ]; then
            eval "exec $n>&-" 2>/dev/null || true
        fi
    done
}

# --- 2. cgroups ---------------------------------------------------------------------------
setup_cgroups() {
    if ! mountpoint -q /sys/fs/cgroup; then
        log "mounting the cgroup filesystems"
        # Any enabled controller bound to a v1 hierarchy means the host uses cgroup v1.
        if awk '!/^#/ && $2 != 0 && $4 == 1 { v1 = 1 } END { exit !v1 }' /proc/cgroups; then
            mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup \
                || die "cannot mount a tmpfs on /sys/fs/cgroup"
            local subsys subsystems
            split_words subsystems "$(awk '!/^#/ && $4 == 1 { print $1 }' /proc/cgroups)"
            for subsys in "${subsystems[@]}"; do
                mkdir -p "/sys/fs/cgroup/$subsys"
                mountpoint -q "/sys/fs/cgroup/$subsys" \
                    || mount -n -t cgroup -o "$subsys" cgroup "/sys/fs/cgroup/$subsys" \
                    || warn "cannot mount the $subsys cgroup hierarchy"
            done
        else
            mount -t cgroup2 cgroup2 /sys/fs/cgroup || die "cannot mount cgroup2 on /sys/fs/cgroup"
        fi
    fi

    # A read-only /sys means we are not privileged (capabilities profile): make it writable.
    # (For root, -w fails only on a read-only mount.)
    [ -w /sys ] || mount -o remount,rw /sys 2>/dev/null || warn "cannot remount /sys read-write"
    # /proc/sys is read-only unless the engine was asked for `systempaths=unconfined` (a docker
    # CLI option the engine API only knows as empty MaskedPaths/ReadonlyPaths): dockerd writes
    # sysctls such as net.ipv4.ip_forward there.
    mounted_read_only /proc/sys && { mount -o remount,bind,rw /proc/sys 2>/dev/null \
        || warn "cannot remount /proc/sys read-write: dockerd may fail to set sysctls"; }

    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        setup_cgroup_v2
    else
        setup_cgroup_v1
    fi
}

setup_cgroup_v1() {
    local d
    for d in /sys/fs/cgroup/*; do
        [ -L "$d" ] && continue
        if [ ! -d "$d" ] || ! mountpoint -q "$d"; then continue; fi
        [ -w "$d" ] || mount -o remount,bind,rw "$d" 2>/dev/null \
            || warn "cannot remount $d read-write: inner containers will fail"
    done

    local devices_h shared
    devices_h="$(awk '!/^#/ && $1 == "devices" && $4 == 1 { print $2 }' /proc/cgroups)"
    if [ -n "$devices_h" ] && [ "$devices_h" != 0 ]; then
        shared="$(awk -v h="$devices_h" '!/^#/ && $2 == h && $1 != "devices" && $4 == 1 { print $1 }' \
            /proc/cgroups | paste -sd, -)"
        if [ -n "$shared" ]; then
            warn "the devices cgroup controller shares a hierarchy with $shared: nested containers will fail"
        fi
    fi
}

setup_cgroup_v2() {
    # The cgroup2 mount is read-only without --privileged.
    [ -w /sys/fs/cgroup ] || mount -o remount,rw /sys/fs/cgroup 2>/dev/null \
        || mount -o remount,bind,rw /sys/fs/cgroup 2>/dev/null \
        || warn "cannot remount /sys/fs/cgroup read-write: inner containers will fail"
    # Only inside a private cgroup namespace is /sys/fs/cgroup our own root: with the host's
    # namespace (--cgroupns=host) its cgroup.procs would list the host's processes.
    if [ "$(cat /proc/self/cgroup)" != "0::/" ]; then
        warn "not in a private cgroup namespace ($(cat /proc/self/cgroup)): leaving cgroup v2 as is (run with --cgroupns=private)"
        return
    fi
    # Move every process (just us, normally) out of the root into /sys/fs/cgroup/init, then
    # hand all controllers down to the children, as dockerd expects.
    mkdir -p /sys/fs/cgroup/init
    local pid tries=0
    while [ -s /sys/fs/cgroup/cgroup.procs ] && [ "$tries" -lt 10 ]; do
        while read -r pid; do
            echo "$pid" >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
        done </sys/fs/cgroup/cgroup.procs
        tries=$((tries + 1))
    done
    local controllers
    controllers="$(sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers)"
    if [ "$controllers" != "+" ]; then
        echo "$controllers" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
            || warn "cannot enable cgroup v2 controllers ($controllers) for the inner daemon"
    fi
}

# --- 3. mounts ----------------------------------------------------------------------------
setup_mounts() {
    # dockerd wants shared propagation for volume mounts of its containers.
    mount --make-rshared / 2>/dev/null || true
    if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
        mount -t securityfs none /sys/kernel/security 2>/dev/null || true
    fi
    if ! mountpoint -q /tmp; then
        mount -t tmpfs -o mode=1777 tmpfs /tmp || warn "cannot mount a tmpfs on /tmp"
    fi
}

# --- 4. /var/lib/docker -------------------------------------------------------------------
check_data_root() {
    mkdir -p /var/lib/docker
    local fstype
    fstype="$(stat -f -c %T /var/lib/docker)"
    if [ "$fstype" = overlayfs ] || [ "$fstype" = overlay ] || ! mountpoint -q /var/lib/docker; then
        if is_true "${DIND_ALLOW_VFS:-}"; then
            banner "/var/lib/docker is NOT a volume (it is on $fstype)." \
                "The inner Docker engine falls back to the vfs storage driver: every" \
                "layer is a full copy. Builds will be very slow and use a lot of disk." \
                "Mount a volume: docker run -v NAME:/var/lib/docker ..."
            STORAGE_DRIVER=""
        else
            banner "/var/lib/docker is NOT a volume (it is on $fstype)." \
                "The inner Docker engine cannot use overlay2 on top of the container's" \
                "own overlayfs and would fall back to the very slow vfs driver." \
                "Mount a volume: docker run -v NAME:/var/lib/docker ..." \
                "(or set DIND_ALLOW_VFS=true to run on vfs anyway)."
            exit 1
        fi
    else
        STORAGE_DRIVER=overlay2
    fi
}

# --- PORT mode: TLS certificates ----------------------------------------------------------
# Layout as in the docker:dind image: ca/, server/, client/ each with ca.pem, cert.pem, key.pem.
# EC P-256 keys: generated in milliseconds, unlike 4096-bit RSA.
ec_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# One subjectAltName entry for $1 (a name, an address, DNS:name or IP:address), or fail: a
# comma, a newline or an openssl directive in DOCKER_TLS_SAN must not reach the certificate.
san_entry() {
    local value=$1 kind
    case "$value" in
        DNS:*) kind=DNS value=${value#DNS:} ;;
        IP:*) kind=IP value=${value#IP:} ;;
        *:*) kind=IP ;;
        *[!0-9.]*) kind=DNS ;;
        *) kind=IP ;;
    esac
    if [ "$kind" = IP ]; then
        [[ "$value" =~ ^[0-9.]+$ || "$value" =~ ^[0-9A-Fa-f:.]+$ ]] || return 1
    else
        [[ "$value" =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || return 1
    fi
    [ "${#value}" -le 253 ] || return 1
    printf '%s:%s' "$kind" "$value"
}

generate_certs() {
    local dir="$TLS_CERTDIR"
    command -v openssl >/dev/null || die "openssl is needed to generate TLS certificates"
    mkdir -p "$dir/ca" "$dir/server" "$dir/client"
    if [ ! -s "$dir/ca/key.pem" ]; then
        log "generating a CA in $dir/ca"
        ec_key "$dir/ca/key.pem" || die "openssl: CA key"
        openssl req -new -x509 -days 825 -sha256 -subj "/CN=agentpool dind CA" \
            -key "$dir/ca/key.pem" -out "$dir/ca/cert.pem" || die "openssl: CA certificate"
        chmod 0600 "$dir/ca/key.pem"
    fi
    # The server certificate is re-issued at every start so that its IP addresses match the
    # container's current ones (a re-created container gets a new address).
    local name ip
    name="$(cat /proc/sys/kernel/hostname)"
    local san="DNS:localhost,DNS:$name,IP:127.0.0.1"
    # The engine writes the container's own addresses next to its host name in /etc/hosts.
    local own extra entries=()
    split_words own "$(awk -v h="$name" '{ for (i = 2; i <= NF; i++) if ($i == h) print $1 }' /etc/hosts)"
    split_words extra "${DOCKER_TLS_SAN:-}"
    entries=("${own[@]}" "${extra[@]}")
    for ip in "${entries[@]}"; do
        san="$san,$(san_entry "$ip")" || die "DOCKER_TLS_SAN: '$ip' is not a host name, an IP address, DNS:name or IP:address"
    done
    log "issuing the server certificate for $san"
    ec_key "$dir/server/key.pem" || die "openssl: server key"
    openssl req -new -sha256 -subj "/CN=$name" -key "$dir/server/key.pem" \
        -out "$dir/server/csr.pem" || die "openssl: server request"
    printf 'subjectAltName = %s\nextendedKeyUsage = serverAuth\n' "$san" >"$dir/server/openssl.cnf"
    openssl x509 -req -days 825 -sha256 -in "$dir/server/csr.pem" -CA "$dir/ca/cert.pem" \
        -CAkey "$dir/ca/key.pem" -CAcreateserial -out "$dir/server/cert.pem" \
        -extfile "$dir/server/openssl.cnf" 2>/dev/null || die "openssl: server certificate"
    cp "$dir/ca/cert.pem" "$dir/server/ca.pem"
    rm -f "$dir/server/csr.pem" "$dir/server/openssl.cnf"
    if [ ! -s "$dir/client/cert.pem" ]; then
        log "issuing a client certificate in $dir/client"
        ec_key "$dir/client/key.pem" || die "openssl: client key"
        openssl req -new -sha256 -subj "/CN=client" -key "$dir/client/key.pem" \
            -out "$dir/client/csr.pem" || die "openssl: client request"
        printf 'extendedKeyUsage = clientAuth\n' >"$dir/client/openssl.cnf"
        openssl x509 -req -days 825 -sha256 -in "$dir/client/csr.pem" -CA "$dir/ca/cert.pem" \
            -CAkey "$dir/ca/key.pem" -CAcreateserial -out "$dir/client/cert.pem" \
            -extfile "$dir/client/openssl.cnf" 2>/dev/null || die "openssl: client certificate"
        cp "$dir/ca/cert.pem" "$dir/client/ca.pem"
        rm -f "$dir/client/csr.pem" "$dir/client/openssl.cnf"
        chmod 0644 "$dir/client/key.pem"
    fi
    chmod 0600 "$dir/server/key.pem"
}

tcp_args() {
    case "$PORT" in
        '' | *[!0-9]*) die "PORT must be a TCP port number, got '$PORT'" ;;
    esac
    if is_true "${DIND_INSECURE_TCP:-}"; then
        banner "PORT mode WITHOUT TLS (DIND_INSECURE_TCP=true): anyone who reaches" \
            "tcp port $PORT of this container controls its Docker engine, and through" \
            "it the container (and, with privileged/capabilities, the host)."
        DOCKERD_ARGS+=("--host=tcp://0.0.0.0:$PORT" --tls=false)
        return
    fi
    local s="$TLS_CERTDIR/server"
    if [ -s "$s/cert.pem" ] && [ -s "$s/key.pem" ] && [ -s "$s/ca.pem" ] && [ ! -s "$TLS_CERTDIR/ca/key.pem" ]; then
        log "using the supplied server certificate in $s"
    else
        generate_certs
    fi
    DOCKERD_ARGS+=("--host=tcp://0.0.0.0:$PORT" --tlsverify
        "--tlscacert=$s/ca.pem" "--tlscert=$s/cert.pem" "--tlskey=$s/key.pem")
}

# --- 5. dockerd ---------------------------------------------------------------------------
start_dockerd() {
    # A previous run of this same container (docker restart) may have left pid files.
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting dockerd (storage driver ${STORAGE_DRIVER:-vfs}, log $DOCKERD_LOG)"
    # While the agent starts beside it, the engine yields the CPU to the agent's JVM (see
    # engine_priority): the agent connects sooner, and a build's `docker` waits for the engine.
    local nice=()
    # Only when the priority can be given back (CAP_SYS_NICE, not a sysbox user namespace):
    # else the engine, and every container a build starts, would stay niced.
    if [ "${1:-}" = agent-first ] && [ "$DOCKERD_START_NICE" -gt 0 ] \
        && (renice -n 1 -p "$BASHPID" && renice -n 0 -p "$BASHPID") >/dev/null 2>&1; then
        nice=(nice -n "$DOCKERD_START_NICE")
    fi
    "${nice[@]}" dockerd "${DOCKERD_ARGS[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 &
    DOCKERD_PID=$!
}

# The engine's processes back to the agent's priority once it answers (children forked
# from now on inherit it; needs CAP_SYS_NICE, which the dind profiles grant).
engine_priority() {
    local pids
    pids="$(pgrep -d ' ' -f '^(dockerd|containerd)( |$)' || true)"
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086 # one argument per pid
    renice -n 0 -p $pids >/dev/null 2>&1 || warn "could not give the engine its priority back (renice); set DIND_DOCKERD_START_NICE=0"
}

# What the image's `docker` waits on: "starting" (naming the log), then "ready" or "failed".
engine_state() {
    case "$1" in
        starting)
            mkdir -p "$STATE_DIR" && rm -f "$STATE_DIR/ready" "$STATE_DIR/failed"
            printf '%s\n' "$DOCKERD_LOG" >"$STATE_DIR/starting"
            ;;
        *) : >"$STATE_DIR/$1" ;;
    esac
}

wait_for_dockerd() {
    local deadline=$((SECONDS + START_TIMEOUT))
    # dockerd opens its socket before it can answer: an unbounded `docker info` would hang
    # as long as dockerd does.
    # curl on the socket, not `docker info`: a poll ten times a second must not compete with
    # the engine and the agent for the CPU while they start.
    while ! curl -fs --max-time 2 --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            engine_state failed
            wait "$DOCKERD_PID"
            printf '[dind-agent] ERROR: dockerd exited with status %s; the end of its log:\n' "$?" >&2
            tail -n 30 "$DOCKERD_LOG" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            engine_state failed
            printf '[dind-agent] ERROR: dockerd did not answer within %s s; the end of its log:\n' \
                "$START_TIMEOUT" >&2
            tail -n 30 "$DOCKERD_LOG" >&2
            kill -KILL "$DOCKERD_PID" 2>/dev/null
            exit 1
        fi
        sleep 0.1
    done
    # Before "ready": a build's first container must not inherit the start's niceness.
    engine_priority
    engine_state ready
    log "inner docker engine ready ($("$REAL_DOCKER" info --format '{{.ServerVersion}}, storage driver {{.Driver}}' 2>/dev/null))"
}

# Wait up to $2 seconds for process $1 to go away.
wait_gone() {
    local pid=$1 steps=$(($2 * 10))
    while [ "$steps" -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        steps=$((steps - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

stop_child() {
    [ -n "$CHILD_PID" ] || return 0
    if kill -0 "$CHILD_PID" 2>/dev/null; then
        log "stopping the ${CHILD_WHAT:-child} (pid $CHILD_PID)"
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait_gone "$CHILD_PID" "$CHILD_STOP_TIMEOUT" || kill -KILL "$CHILD_PID" 2>/dev/null
    fi
    wait "$CHILD_PID" 2>/dev/null
    CHILD_PID=""
}

stop_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        local ids
        split_words ids "$(timeout 2 "$REAL_DOCKER" ps -q 2>/dev/null)"
        if [ "${#ids[@]}" -gt 0 ]; then
            log "stopping inner containers: ${ids[*]}"
            timeout $((CONTAINER_STOP_TIMEOUT + 2)) "$REAL_DOCKER" stop --time "$CONTAINER_STOP_TIMEOUT" "${ids[@]}" >/dev/null 2>&1
        fi
        log "stopping dockerd"
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        if ! wait_gone "$DOCKERD_PID" "$DOCKERD_STOP_TIMEOUT"; then
            warn "dockerd did not stop within ${DOCKERD_STOP_TIMEOUT} s: killing it"
            kill -KILL "$DOCKERD_PID" 2>/dev/null
        fi
    fi
    wait "$DOCKERD_PID" 2>/dev/null
    DOCKERD_PID=""
    # As PID 1 of the container, make sure nothing (containerd, shims) outlives us.
    if [ "$$" = 1 ]; then
        kill -TERM -1 2>/dev/null && sleep 0.2
        kill -KILL -1 2>/dev/null
    fi
}

shutdown() {
    local status=$1
    trap '' TERM INT
    stop_child
    stop_dockerd
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    log "exiting with status $status"
    exit "$status"
}

# Wait for the child (if any) or dockerd, whichever ends first, and shut down.
supervise() {
    local done_pid="" status
    if [ -n "$CHILD_PID" ]; then
        wait -n -p done_pid "$CHILD_PID" "$DOCKERD_PID"
        status=$?
    else
        wait -n -p done_pid "$DOCKERD_PID"
        status=$?
    fi
    if [ "$done_pid" = "$CHILD_PID" ] && [ -n "$CHILD_PID" ]; then
        CHILD_PID=""
        log "the ${CHILD_WHAT:-child} exited with status $status"
        shutdown "$status"
    fi
    DOCKERD_PID=""
    printf '[dind-agent] ERROR: dockerd exited with status %s; the end of its log:\n' "$status" >&2
    tail -n 30 "$DOCKERD_LOG" >&2
    shutdown 1
}

# --- 6. Jenkins mode ----------------------------------------------------------------------
fetch_agent_jar() {
    if [ -s "$AGENT_JAR" ]; then
        log "using $AGENT_JAR"
        return
    fi
    [ -n "${JENKINS_URL:-}" ] || die "JENKINS_URL is needed to download agent.jar (or supply AGENT_JAR)"
    local url="${JENKINS_URL%/}/jnlpJars/agent.jar"
    log "downloading $url"
    mkdir -p "$(dirname "$AGENT_JAR")"
    # In the background: a foreground command would hold off our SIGTERM trap until it ends.
    curl -fsS --retry 5 --retry-delay 2 --retry-all-errors --retry-max-time 90 \
        --connect-timeout 5 --max-time 60 -o "$AGENT_JAR.tmp" "$url" &
    if wait $!; then
        mv "$AGENT_JAR.tmp" "$AGENT_JAR"
    elif [ -s /usr/share/jenkins/agent.jar ]; then
        rm -f "$AGENT_JAR.tmp"
        warn "could not download $url; using the image's /usr/share/jenkins/agent.jar (may not match the controller)"
        AGENT_JAR=/usr/share/jenkins/agent.jar
    else
        rm -f "$AGENT_JAR.tmp"
        die "could not download $url"
    fi
}

start_agent() {
    local workdir="${JENKINS_AGENT_WORKDIR:-/home/jenkins/agent}"
    mkdir -p "$workdir"
    local args=()
    [ -n "${JENKINS_URL:-}" ] && args+=(-url "$JENKINS_URL")
    args+=(-name "$JENKINS_AGENT_NAME" -workDir "$workdir")
    is_true "${JENKINS_WEB_SOCKET:-}" && args+=(-webSocket)
    [ -n "${JENKINS_TUNNEL:-}" ] && args+=(-tunnel "$JENKINS_TUNNEL")
    [ -n "${JENKINS_DIRECT_CONNECTION:-}" ] && args+=(-direct "$JENKINS_DIRECT_CONNECTION")
    [ -n "${JENKINS_INSTANCE_IDENTITY:-}" ] && args+=(-instanceIdentity "$JENKINS_INSTANCE_IDENTITY")
    local extra java_opts
    split_words extra "${REMOTING_OPTS:-}"
    split_words java_opts "${JAVA_OPTS:-}"
    local secret shown_secret='********'
    if [ -n "${JENKINS_SECRET_FILE:-}" ]; then
        # agentpool copies the secret into the container as a file: `docker inspect` does not
        # show it, and the agent's command line shows only the path (`-secret @FILE`).
        [ -r "$JENKINS_SECRET_FILE" ] && [ -s "$JENKINS_SECRET_FILE" ] \
            || die "JENKINS_SECRET_FILE: cannot read $JENKINS_SECRET_FILE"
        secret="@$JENKINS_SECRET_FILE"
        shown_secret="$secret"
    else
        secret="$JENKINS_SECRET"
    fi
    local shown=(java "${java_opts[@]}" -jar "$AGENT_JAR" -secret "$shown_secret" "${args[@]}" "${extra[@]}")
    log "starting the Jenkins agent: ${shown[*]}"
    # The builds this agent runs inherit its environment: keep the secret out of it.
    unset JENKINS_SECRET JENKINS_SECRET_FILE
    java "${java_opts[@]}" -jar "$AGENT_JAR" -secret "$secret" "${args[@]}" "${extra[@]}" </dev/null &
    CHILD_PID=$!
    CHILD_WHAT="Jenkins agent"
}

# --- main ---------------------------------------------------------------------------------
main() {
    close_inherited_fds
    trap 'shutdown 143' TERM
    trap 'shutdown 130' INT
    [ "$(id -u)" = 0 ] || die "must run as root (dockerd needs it): run the image with --user root"

    local mode=engine
    if [ -n "${PORT:-}" ]; then
        mode=port
    elif [ -n "${JENKINS_SECRET:-}${JENKINS_SECRET_FILE:-}${JENKINS_AGENT_NAME:-}" ] || [ -n "${JENKINS_URL:-}" ]; then
        mode=jenkins
        local missing=""
        [ -n "${JENKINS_SECRET:-}${JENKINS_SECRET_FILE:-}" ] || missing="$missing JENKINS_SECRET"
        [ -n "${JENKINS_AGENT_NAME:-}" ] || missing="$missing JENKINS_AGENT_NAME"
        [ -n "${JENKINS_URL:-}${JENKINS_DIRECT_CONNECTION:-}" ] || missing="$missing JENKINS_URL"
        [ -z "$missing" ] || die "Jenkins mode needs$missing (set JENKINS_URL, JENKINS_SECRET and JENKINS_AGENT_NAME)"
        [ $# -eq 0 ] || die "Jenkins mode takes no command arguments (got: $*)"
    elif [ $# -gt 0 ]; then
        mode="command"
    elif [ -t 0 ] && [ -t 1 ]; then
        mode=shell
    fi
    [ "$mode" = port ] && [ -n "${JENKINS_SECRET:-}${JENKINS_SECRET_FILE:-}" ] && warn "PORT is set: Jenkins variables are ignored (no agent in PORT mode)"

    setup_cgroups
    setup_mounts
    check_data_root

    DOCKERD_ARGS=(--host=unix:///var/run/docker.sock "--shutdown-timeout=$DOCKERD_STOP_TIMEOUT")
    [ -n "$STORAGE_DRIVER" ] && DOCKERD_ARGS+=("--storage-driver=$STORAGE_DRIVER")
    [ "$mode" = port ] && tcp_args
    local dockerd_opts
    split_words dockerd_opts "${DOCKERD_OPTS:-}"
    DOCKERD_ARGS+=("${dockerd_opts[@]}")

    engine_state starting
    # The agent connects while the engine starts; builds' `docker` waits for it (see step 5).
    if [ "$mode" = jenkins ] && is_true "${DIND_AGENT_FIRST:-true}"; then
        start_dockerd agent-first
        fetch_agent_jar
        start_agent
    else
        start_dockerd
    fi
    wait_for_dockerd

    case "$mode" in
        jenkins)
            if [ -z "$CHILD_PID" ]; then
                fetch_agent_jar
                start_agent
            fi
            ;;
        command)
            log "running: $*"
            "$@" &
            CHILD_PID=$!
            CHILD_WHAT="command"
            ;;
        shell)
            log "interactive shell; the inner engine stops when it exits"
            # A foreground job keeps the terminal. Ctrl-C belongs to the shell, not to us;
            # `docker stop` takes effect when the shell exits (or after the 10 s kill).
            trap ':' INT
            "${SHELL:-/bin/bash}" -l
            shutdown $?
            ;;
        port)
            log "Docker as a service on tcp port $PORT"
            tail -n 0 -F "$DOCKERD_LOG" 2>/dev/null &
            TAIL_PID=$!
            ;;
        engine)
            tail -n 0 -F "$DOCKERD_LOG" 2>/dev/null &
            TAIL_PID=$!
            ;;
    esac
    supervise
}

main "$@"
