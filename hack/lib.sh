# Shared helpers for the hack/ scripts. Sourced, never executed.
# shellcheck shell=bash disable=SC2034 # REPO_ROOT is for the scripts that source this

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"

log() { echo "[$(date +%H:%M:%S)] $(basename "$0"): $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# wait_for SECONDS DESCRIPTION CMD... — runs CMD every 0.5 s until it succeeds;
# fails with DESCRIPTION once SECONDS have passed. Every wait in hack/ goes through
# here, so nothing hangs without a deadline.
wait_for() {
    local timeout="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for: $what"
            return 1
        fi
        sleep 0.5
    done
}

# k8s_bin_dir — the cached upstream binaries (building them on first use).
# SHARDEDSTORE_K8S_BIN overrides it, e.g. to point at a release download.
k8s_bin_dir() {
    if [[ -n "${SHARDEDSTORE_K8S_BIN:-}" ]]; then
        echo "$SHARDEDSTORE_K8S_BIN"
        return
    fi
    "$HACK_DIR/k8s-bins.sh" | tail -n1
}

# Guards that keep a local cluster's traffic on this machine. Only the package
# registries are reachable from here, and traffic to any other address (private ranges
# included) is not ours to send: nothing forwarded from the cluster's BRIDGE leaves
# through an uplink (an interface with a default route) — a worker's kubelet looking up
# a registry, a pod's DNS query — and nothing sent to one of the cluster's RANGES does
# either (a Service or pod address whose route or kube-proxy rule is gone would otherwise
# follow the default route out). The range rules sit in mangle POSTROUTING, where the
# outgoing interface is the final one: in OUTPUT it is still the one routed before
# kube-proxy's DNAT turned a Service address into a pod's. Each rule carries the comment
# TAG so guard_remove finds it; the guards go up before any cluster process starts and
# come down after the last one stopped.
GUARD_CHAINS=("filter FORWARD" "mangle POSTROUTING")

uplinks() {
    ip -4 route show default 2>/dev/null |
        awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | sort -u
}

# guard_add TAG BRIDGE RANGE...
guard_add() {
    local tag="$1" bridge="$2" up r
    shift 2
    for up in $(uplinks); do
        guard_rule "$tag" filter FORWARD -i "$bridge" -o "$up"
        for r in "$@"; do
            guard_rule "$tag" mangle POSTROUTING -d "$r" -o "$up"
        done
    done
}

guard_rule() {
    local tag="$1" table="$2" chain="$3"
    shift 3
    iptables -w -t "$table" -C "$chain" "$@" -m comment --comment "$tag" -j DROP 2>/dev/null ||
        iptables -w -t "$table" -I "$chain" 1 "$@" -m comment --comment "$tag" -j DROP
}

# guard_remove TAG — deletes TAG's rules, saying how many packets they stopped (a
# number above zero names traffic that would have left the machine).
guard_remove() {
    local tag="$1" tc table chain stopped=0 n rule
    for tc in "${GUARD_CHAINS[@]}"; do
        read -r table chain <<<"$tc"
        n="$(iptables -w -t "$table" -nvxL "$chain" 2>/dev/null |
            awk -v t="/* $tag */" 'index($0, t) {s += $1} END {print s + 0}')"
        stopped=$((stopped + n))
        { iptables -w -t "$table" -S "$chain" 2>/dev/null | grep -F -- "--comment $tag " || true; } |
            while read -r rule; do
                # shellcheck disable=SC2086 # the rule is iptables words
                iptables -w -t "$table" ${rule/-A/-D} 2>/dev/null || true
            done
    done
    ((stopped == 0)) || log "the $tag guard stopped $stopped packets bound off this machine"
}

# free_port — a TCP port that nothing on this host listens on or uses right now.
# Random in 20000-59999 so concurrent test processes rarely pick the same one;
# `taken` (space separated) excludes ports already handed out by this process.
free_port() {
    local used port
    used="$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u)"
    while :; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        grep -qx "$port" <<<"$used" && continue
        [[ " ${taken:-} " == *" $port "* ]] && continue
        taken="${taken:-} $port"
        echo "$port"
        return
    done
}

# pid_alive PIDFILE MARKER — the process in PIDFILE runs and its command line
# contains MARKER (guards against a recycled pid after a reboot or crash).
pid_alive() {
    local pidfile="$1" marker="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    # (No `| grep -q`: under pipefail an early grep exit fails the pipeline.)
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$marker"* ]]
}

# stop_pidfile PIDFILE MARKER [GRACE] — TERM the process (and its process group,
# all our daemons are started with setsid), KILL it after GRACE seconds.
stop_pidfile() {
    local pidfile="$1" marker="$2" grace="${3:-10}" pid deadline
    if pid_alive "$pidfile" "$marker"; then
        pid="$(cat "$pidfile")"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + grace))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    fi
    rm -f "$pidfile"
}

# stop_pidfiles GRACE MARKER PIDFILE... — stop_pidfile for several processes at
# once: TERM all, then wait for all, so shutdown costs one grace period, not the sum.
stop_pidfiles() {
    local grace="$1" marker="$2" f pid pids=() deadline
    shift 2
    for f in "$@"; do
        if pid_alive "$f" "$marker"; then
            pid="$(cat "$f")"
            pids+=("$pid")
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    deadline=$((SECONDS + grace))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        deadline=$((SECONDS + 5))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    done
    rm -f "$@"
}

# close_inherited_fds — closes every descriptor above 2 of the current (sub)shell.
close_inherited_fds() {
    local f fd
    for f in /proc/"$BASHPID"/fd/*; do
        fd="${f##*/}"
        [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)) || continue
        exec {fd}>&- 2>/dev/null || true
    done
}

# start_daemon NAME DIR CMD... — runs CMD in its own session with output in
# DIR/logs/NAME.log and its pid in DIR/pids/NAME.pid. The daemon gets no descriptor
# of ours but stdin/stdout/stderr: a lock the caller holds (`flock LOCKFILE make
# cluster-up` passes the lock's descriptor down to every child) must end with the
# caller, not live on in the daemons of a cluster left running.
start_daemon() {
    local name="$1" dir="$2"
    shift 2
    mkdir -p "$dir/logs" "$dir/pids"
    (
        close_inherited_fds
        exec setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null
    ) &
    echo $! >"$dir/pids/$name.pid"
    disown $! # no "Killed" job notices from the shell that later stops it
}

# dump_logs DIR — the tail of every log, for a failed start.
dump_logs() {
    local f
    for f in "$1"/logs/*.log; do
        [[ -f "$f" ]] || continue
        echo "----- $f (last 25 lines)" >&2
        tail -n 25 "$f" >&2
    done
}

# issue_cert CERTDIR NAME SUBJECT USAGE [SANS] — an ECDSA key and a certificate
# signed by CERTDIR/ca.{crt,key}. USAGE is serverAuth, clientAuth or both
# (comma separated); SANS is an openssl subjectAltName list.
issue_cert() {
    local dir="$1" name="$2" subject="$3" usage="$4" sans="${5:-}" ext
    ext="$(mktemp)"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n "$sans" ]] && echo "subjectAltName=$sans"
    } >"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$ext" \
        -out "$dir/$name.crt" 2>/dev/null
    rm -f "$ext" "$dir/$name.csr"
}

# new_ca CERTDIR — a self-signed ECDSA CA.
new_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1/ca.key" -out "$1/ca.crt" -days 3650 \
        -subj "/CN=shardedstore-local-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# write_kubeconfig FILE SERVER CERTDIR NAME — a self-contained kubeconfig (certs
# embedded) for the client certificate CERTDIR/NAME.{crt,key}.
write_kubeconfig() {
    local file="$1" server="$2" dir="$3" name="$4" tmp
    tmp="$file.tmp.$$"
    cat >"$tmp" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: shardedstore-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$dir/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$dir/$name.crt")
    client-key-data: $(base64 -w0 "$dir/$name.key")
contexts:
- name: shardedstore-local
  context:
    cluster: shardedstore-local
    user: $name
current-context: shardedstore-local
KCFG
    chmod 600 "$tmp"
    mv "$tmp" "$file"
}
