#!/usr/bin/env bash
# Build the p2plab node image (default p2plab-node:latest).
#
#   (a) ensure the base image exists: present -> skip; else `docker pull` with a
#       short timeout; else debootstrap a minbase Debian rootfs from the host's
#       own apt mirror and `docker import` it under the base tag;
#   (b) ensure the release binaries exist (runs cargo unless P2PLAB_SKIP_CARGO);
#   (c) build the image from a small temporary context (Dockerfile,
#       the SCRIPTS and BINARIES below); skipped when the image
#       already carries the content hash of exactly these inputs.
#
# Environment (all optional):
#   P2PLAB_IMAGE            image tag to build         (p2plab-node:latest)
#   P2PLAB_BASE             base image tag             (debian:bookworm-slim)
#   P2PLAB_DEBIAN_MIRROR    mirror for debootstrap     (read from host apt sources)
#   P2PLAB_DEBIAN_SUITE     suite for debootstrap      (bookworm)
#   P2PLAB_DEBIAN_SECURITY_MIRROR  security mirror for the base image's apt
#                           sources (read from host apt sources; "none": omit)
#   P2PLAB_CARGO_PROFILE    release | dev              (release); dev builds with
#                           cargo's dev profile into target/debug, quicker
#                           where the tests built it already (`cargo test`
#                           uses it); the copies in the image are stripped
#   P2PLAB_BIN_DIR          where the binaries are     (<repo>/target/release,
#                                                       or $CARGO_TARGET_DIR/release;
#                                                       target/debug for dev)
#   P2PLAB_SKIP_CARGO       non-empty: do not run cargo, just use P2PLAB_BIN_DIR
#   P2PLAB_PULL_TIMEOUT     seconds for the `docker pull` attempt (20)
#
# See docker/README.md.
set -euo pipefail

PROG=build-image.sh
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)

IMAGE=${P2PLAB_IMAGE:-p2plab-node:latest}
BASE=${P2PLAB_BASE:-debian:bookworm-slim}
SUITE=${P2PLAB_DEBIAN_SUITE:-bookworm}
PROFILE=${P2PLAB_CARGO_PROFILE:-release}
case "$PROFILE" in
    release) PROFILE_DIR=release; CARGO_PROFILE_ARGS=(--release) ;;
    dev)     PROFILE_DIR=debug;   CARGO_PROFILE_ARGS=() ;;
    *) echo "$PROG: error: P2PLAB_CARGO_PROFILE=$PROFILE: use release or dev" >&2; exit 1 ;;
esac
BIN_DIR=${P2PLAB_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$PROFILE_DIR}
PULL_TIMEOUT=${P2PLAB_PULL_TIMEOUT:-20}
BINARIES=(monitor listener dialer probe delayline bench router-rules)
# Scripts of docker/ that go into the image (the Dockerfile names where).
SCRIPTS=(entrypoint.sh router.sh vpn.sh impair.sh)

LABEL_MANAGED=org.p2plab.managed
LABEL_HASH=org.p2plab.content-hash

log() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup ---
TMP_DIRS=()
SUDO=()          # set to (sudo -n) when debootstrap must run as root via sudo
cleanup() {
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
        [ -d "$d" ] || continue
        # a failed debootstrap can leave proc/sys/dev mounted inside its target
        awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
            while IFS= read -r m; do "${SUDO[@]}" umount -l "$m" 2>/dev/null || true; done || true
        "${SUDO[@]}" rm -rf --one-file-system -- "$d" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mk_tmp NAME: create a temp dir, register it for cleanup, set TMP to it.
# (Not used as $(mk_tmp): the registration would be lost in the subshell.)
mk_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/p2plab-$1.XXXXXX") || die "cannot create a temporary directory"
    TMP_DIRS+=("$TMP")
}

# One build at a time on this machine (same tag, same temp dirs, same apt).
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/p2plab-build-image.lock"
    flock 9
fi

# ----------------------------------------------------------------- docker ---
command -v docker >/dev/null 2>&1 || die "docker command not found"
if ! server_version=$(timeout 15 docker version --format '{{.Server.Version}}' 2>/dev/null) \
        || [ -z "$server_version" ]; then
    die "Docker daemon unreachable (is dockerd running, and may this user use it?)"
fi

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# --------------------------------------------------------- mirror lookup ---
# Print the first http(s)/ftp/file URI of an enabled `deb` source for $1 in the
# host's apt configuration (deb822 *.sources and one-line *.list files).
host_mirror() {
    local suite=$1 f
    shopt -s nullglob
    local sources=(/etc/apt/sources.list.d/*.sources)
    local lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    {
        for f in "${sources[@]+"${sources[@]}"}"; do
            [ -r "$f" ] || continue
            awk -v suite="$suite" '
                BEGIN { RS = ""; FS = "\n" }
                {
                    types = ""; uris = ""; suites = ""; enabled = "yes"
                    for (i = 1; i <= NF; i++) {
                        line = $i
                        if (line ~ /^[ \t]*#/ || line !~ /:/) continue
                        key = tolower(substr(line, 1, index(line, ":") - 1))
                        val = substr(line, index(line, ":") + 1)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    gsub(/[ \t]/, "", enabled)
                    if (enabled == "no" || (" " types " ") !~ /[ \t]deb[ \t]/) next
                    n = split(suites, s, /[ \t]+/)
                    for (j = 1; j <= n; j++) if (s[j] == suite) {
                        m = split(uris, u, /[ \t]+/)
                        for (k = 1; k <= m; k++) if (u[k] != "") { print u[k]; exit }
                    }
                }' "$f"
        done
        for f in "${lists[@]+"${lists[@]}"}"; do
            [ -r "$f" ] || continue
            awk -v suite="$suite" '
                $1 != "deb" { next }
                {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f"
        done
    } | grep -E '^(https?|ftp|file):' | head -n 1 | sed 's:/*$::'
}

# ------------------------------------------------------- (a) base image ---
make_base_by_debootstrap() {
    local mirror=${P2PLAB_DEBIAN_MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$(host_mirror "$SUITE") || true
        [ -n "$mirror" ] || die "no Debian mirror for suite '$SUITE' found in /etc/apt/sources.list*; set P2PLAB_DEBIAN_MIRROR"
    fi

    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            die "creating base image $BASE needs debootstrap, which needs root (or passwordless sudo)"
        fi
    fi

    if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
        log "installing debootstrap with apt-get"
        if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1; then
            "${SUDO[@]}" apt-get update -q >/dev/null 2>&1 || true
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 \
                || die "cannot install debootstrap with apt-get (is the host's apt mirror reachable?)"
        fi
    fi
    local debootstrap
    debootstrap=$(command -v debootstrap || echo /usr/sbin/debootstrap)

    local work rootfs
    mk_tmp rootfs
    work=$TMP
    rootfs=$work/rootfs
    log "creating $BASE: debootstrap --variant=minbase $SUITE from $mirror (35-80 s)"
    local t0=$SECONDS
    if ! "${SUDO[@]}" "$debootstrap" --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 15 "$work/debootstrap.log" >&2 || true
        die "debootstrap of $SUITE from $mirror failed (log above; set P2PLAB_DEBIAN_MIRROR to use another mirror)"
    fi
    # apt sources of the image: the mirror above, plus -updates and -security
    # when the host's own sources have them (not with P2PLAB_DEBIAN_MIRROR,
    # whose host may lack them; P2PLAB_DEBIAN_SECURITY_MIRROR adds security).
    local updates="" security=${P2PLAB_DEBIAN_SECURITY_MIRROR:-}
    if [ -z "${P2PLAB_DEBIAN_MIRROR:-}" ]; then
        updates=$(host_mirror "$SUITE-updates") || true
        [ -n "$security" ] || security=$(host_mirror "$SUITE-security") || true
    fi
    [ "$security" != none ] || security=""
    {
        echo "deb $mirror $SUITE main"
        [ -z "$updates" ] || echo "deb $updates $SUITE-updates main"
        [ -z "$security" ] || echo "deb $security $SUITE-security main"
    } | "${SUDO[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null

    # Make it "slim" the way Debian's official -slim images are: no docs, man
    # pages or translations, now or from later package installs (copyright
    # files are kept); no downloaded .debs or apt lists (builds run apt-get
    # update anyway).
    "${SUDO[@]}" tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
    "${SUDO[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    "${SUDO[@]}" find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    "${SUDO[@]}" find "$rootfs/usr/share/man" "$rootfs/usr/share/groff" "$rootfs/usr/share/info" \
        "$rootfs/usr/share/lintian" "$rootfs/usr/share/linda" -mindepth 1 -delete 2>/dev/null || true
    "${SUDO[@]}" find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} + 2>/dev/null || true
    "${SUDO[@]}" find "$rootfs/var/cache/apt" "$rootfs/var/lib/apt/lists" \
        -type f ! -name lock -delete 2>/dev/null || true

    log "debootstrap done in $((SECONDS - t0)) s; importing rootfs as $BASE"
    # shellcheck disable=SC2016  # $PATH is literal for the image config
    "${SUDO[@]}" tar --numeric-owner -C "$rootfs" -c . | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            --change "LABEL org.p2plab.base-source=debootstrap org.p2plab.debian-suite=$SUITE" \
            --message "debootstrap --variant=minbase $SUITE $mirror" \
            - "$BASE" >/dev/null \
        || die "docker import of the debootstrapped rootfs as $BASE failed"
    log "created $BASE in $((SECONDS - t0)) s"
}

ensure_base() {
    if image_exists "$BASE"; then
        return 0
    fi
    log "base image $BASE not present; trying docker pull (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull -q "$BASE" >/dev/null 2>&1 && image_exists "$BASE"; then
        log "pulled $BASE"
        return 0
    fi
    log "docker pull $BASE failed; building it with debootstrap"
    make_base_by_debootstrap
}

# -------------------------------------------------------- (b) binaries ---
ensure_binaries() {
    if [ -z "${P2PLAB_SKIP_CARGO:-}" ]; then
        command -v cargo >/dev/null 2>&1 \
            || die "cargo not found (install Rust, or set P2PLAB_SKIP_CARGO=1 with P2PLAB_BIN_DIR)"
        log "cargo build ${CARGO_PROFILE_ARGS[*]+"${CARGO_PROFILE_ARGS[*]} "}-p p2plab-node -p p2plab-tools --bins"
        (cd "$REPO_ROOT" && cargo build ${CARGO_PROFILE_ARGS[@]+"${CARGO_PROFILE_ARGS[@]}"} -p p2plab-node -p p2plab-tools --bins) \
            || die "cargo build ($PROFILE) -p p2plab-node -p p2plab-tools --bins failed"
    fi
    local b
    for b in "${BINARIES[@]}"; do
        if [ ! -f "$BIN_DIR/$b" ] || [ ! -x "$BIN_DIR/$b" ]; then
            die "binary missing or not executable: $BIN_DIR/$b (build it, or set P2PLAB_BIN_DIR)"
        fi
    done
}

# ----------------------------------------------------------- (c) image ---
build_image() {
    local ctx hash base_id current existing old_id t0
    mk_tmp context
    ctx=$TMP
    local b
    for b in "${BINARIES[@]}"; do
        # debug info stays on the host: a dev binary is ~300 MB with it, ~40 MB without
        if command -v strip >/dev/null 2>&1; then
            strip --strip-debug -o "$ctx/$b" -- "$BIN_DIR/$b" || cp -L -- "$BIN_DIR/$b" "$ctx/$b"
        else
            cp -L -- "$BIN_DIR/$b" "$ctx/$b"
        fi
    done
    cp -- "$SCRIPT_DIR/Dockerfile" "$ctx/Dockerfile"
    for f in "${SCRIPTS[@]}"; do
        cp -- "$SCRIPT_DIR/$f" "$ctx/$f"
    done
    chmod 0755 "${SCRIPTS[@]/#/$ctx/}" "${BINARIES[@]/#/$ctx/}"
    chmod 0644 "$ctx/Dockerfile"

    # Hash the copies actually sent to docker (a concurrent cargo build cannot
    # make hash and image disagree), plus the base image id.
    base_id=$(docker image inspect -f '{{.Id}}' "$BASE")
    hash=$( { (cd "$ctx" && sha256sum Dockerfile "${SCRIPTS[@]}" "${BINARIES[@]}"); echo "base $base_id"; } \
            | sha256sum | cut -d' ' -f1)

    current=$(docker image inspect -f "{{index .Config.Labels \"$LABEL_HASH\"}}" "$IMAGE" 2>/dev/null || true)
    if [ "$current" = "$hash" ]; then
        echo "image up to date: $IMAGE ($LABEL_HASH=${hash:0:12})"
        return 0
    fi
    existing=$(docker images -q --no-trunc --filter "label=$LABEL_HASH=$hash" | head -n 1)
    if [ -n "$existing" ]; then
        docker tag "$existing" "$IMAGE"
        echo "image up to date: $IMAGE (re-tagged existing ${existing#sha256:} with $LABEL_HASH=${hash:0:12})"
        return 0
    fi

    old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    log "building $IMAGE from $BASE (context: $(du -sh "$ctx" | cut -f1))"
    t0=$SECONDS
    # Docker 20.10 server, no buildx plugin: use the classic builder explicitly.
    DOCKER_BUILDKIT=0 docker build \
            --build-arg "BASE=$BASE" \
            --label "$LABEL_MANAGED=true" \
            --label "$LABEL_HASH=$hash" \
            -t "$IMAGE" "$ctx" \
        || die "docker build of $IMAGE failed (output above; if apt-get failed, the build container cannot reach the base image's Debian mirror)"
    log "built $IMAGE in $((SECONDS - t0)) s"

    # The previous build of this tag is now untagged: remove it unless it is
    # still used (by a container or another tag). Only our own labelled images.
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ] \
            && [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL_MANAGED\"}}|{{len .RepoTags}}" "$old_id" 2>/dev/null)" = "true|0" ]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
}

ensure_base
ensure_binaries
build_image
