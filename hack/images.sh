#!/usr/bin/env bash
# Builds OCI images without Docker or a registry (buildah, vfs storage) and imports
# them into the local cluster's containerd, namespace k8s.io:
#
#   pause     registry.k8s.io/pause:3.10      the pod sandbox (a static C pause)
#   busybox   shardedstore/busybox:dev        Debian's busybox-static, for smoke tests
#   operator  shardedstore/operator:dev       /usr/local/bin/shardedstore-operator
#   node      shardedstore/node:dev           /usr/local/bin/shardedstore-node, /usr/local/bin/shardedstore
#
#   hack/images.sh [pause|busybox|operator|node]...   (no argument: all four)
#
# The Rust binaries come from ${CARGO_TARGET_DIR:-target}/release; when one is
# missing this runs `cargo build --release`. SHARDEDSTORE_IMAGES_PROFILE=debug takes them
# from target/debug instead (`cargo build --workspace --bins`; larger images, but no
# release build on a slow machine). They are glibc-dynamic, so each image
# carries the binary, the libraries `ldd` names and the dynamic loader.
# Needs the cluster's containerd (hack/cluster-up.sh); SHARDEDSTORE_IMAGES_OUT=DIR
# only writes the OCI archives to DIR instead of importing them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"
targets=("$@")
((${#targets[@]})) || targets=(pause busybox operator node)

work="$(mktemp -d /tmp/shardedstore-images.XXXXXX)"
trap 'buildah_ rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
buildah_() { buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run" "$@"; }

# add_binary ROOTFS SRC DEST — SRC at DEST plus every shared library it loads.
add_binary() {
    local rootfs="$1" src="$2" dest="$3" lib
    install -D -m 0755 "$src" "$rootfs$dest"
    for lib in $(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' || true); do
        [[ -f "$lib" ]] || continue
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
}

# base_rootfs ROOTFS — the files every image needs: users, /tmp.
base_rootfs() {
    local rootfs="$1"
    mkdir -p "$rootfs"/{etc,tmp,data}
    chmod 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    chown 65532:65532 "$rootfs/data"
}

# commit ROOTFS NAME [buildah config args...] — image NAME from ROOTFS, then imported.
commit() {
    local rootfs="$1" name="$2" ctr archive
    shift 2
    ctr="$(buildah_ from scratch)"
    buildah_ copy "$ctr" "$rootfs" / >/dev/null
    buildah_ config --os linux --arch amd64 "$@" "$ctr"
    buildah_ commit --quiet "$ctr" "$name" >/dev/null
    buildah_ rm "$ctr" >/dev/null
    archive="$work/$(echo "$name" | tr '/:' '__').tar"
    buildah_ push --quiet "$name" "oci-archive:$archive:$(full_name "$name")" >/dev/null
    if [[ -n "${SHARDEDSTORE_IMAGES_OUT:-}" ]]; then
        mkdir -p "$SHARDEDSTORE_IMAGES_OUT"
        cp "$archive" "$SHARDEDSTORE_IMAGES_OUT/"
        log "wrote $SHARDEDSTORE_IMAGES_OUT/$(basename "$archive")"
    else
        ctr_ -n k8s.io images import "$archive" >/dev/null
        grep -qx "$(full_name "$name")" <<<"$(ctr_ -n k8s.io images ls -q)" ||
            die "import of $name did not produce $(full_name "$name")"
        log "imported $(full_name "$name")"
    fi
}

# The normalized name containerd stores (docker.io/ for short names).
full_name() {
    case "$1" in
    */*.*/* | *.*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
    esac
}

build_pause() {
    local rootfs="$work/pause"
    mkdir -p "$rootfs"
    cat >"$work/pause.c" <<'EOF'
/* The pod sandbox process: holds the namespaces, reaps zombies, exits on TERM/INT. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, on_term);
    signal(SIGTERM, on_term);
    signal(SIGCHLD, on_child);
    for (;;) pause();
}
EOF
    gcc -static -O2 -o "$rootfs/pause" "$work/pause.c"
    commit "$rootfs" "$PAUSE_IMAGE" --entrypoint '["/pause"]' --user 65535:65535
}

build_busybox() {
    local rootfs="$work/busybox" app
    base_rootfs "$rootfs"
    install -D -m 0755 /bin/busybox "$rootfs/bin/busybox"
    for app in $(/bin/busybox --list); do
        [[ -e "$rootfs/bin/$app" ]] || ln -s busybox "$rootfs/bin/$app"
    done
    commit "$rootfs" shardedstore/busybox:dev --cmd '["/bin/sh"]' --env PATH=/bin
}

release_bin() {
    local profile="${SHARDEDSTORE_IMAGES_PROFILE:-release}" flag=(--release)
    [[ "$profile" == release ]] || flag=()
    [[ "$profile" == release || "$profile" == debug ]] || die "SHARDEDSTORE_IMAGES_PROFILE must be release or debug"
    local target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$profile/$1"
    if [[ ! -x "$target" ]]; then
        log "$target missing: cargo build ${flag[*]} --workspace --bins"
        (cd "$REPO_ROOT" && cargo build "${flag[@]}" --workspace --bins) >&2
    fi
    [[ -x "$target" ]] || die "cargo build ${flag[*]} produced no $target"
    echo "$target"
}

build_operator() {
    local rootfs="$work/operator"
    base_rootfs "$rootfs"
    add_binary "$rootfs" "$(release_bin shardedstore-operator)" /usr/local/bin/shardedstore-operator
    commit "$rootfs" shardedstore/operator:dev --user 65532:65532 \
        --entrypoint '["/usr/local/bin/shardedstore-operator"]' --cmd '["run"]'
}

build_node() {
    local rootfs="$work/node"
    base_rootfs "$rootfs"
    add_binary "$rootfs" "$(release_bin shardedstore-node)" /usr/local/bin/shardedstore-node
    add_binary "$rootfs" "$(release_bin shardedstore)" /usr/local/bin/shardedstore
    commit "$rootfs" shardedstore/node:dev --user 65532:65532 --workingdir /data \
        --entrypoint '["/usr/local/bin/shardedstore-node"]'
}

install_host_packages
if [[ -z "${SHARDEDSTORE_IMAGES_OUT:-}" ]]; then
    ctr_ version >/dev/null 2>&1 || die "containerd is not running at $CONTAINERD_SOCK (run hack/cluster-up.sh)"
fi
for t in "${targets[@]}"; do
    case "$t" in
    pause | busybox | operator | node) "build_$t" ;;
    *) die "unknown image '$t' (pause, busybox, operator, node)" ;;
    esac
done
