#!/bin/sh
# Starts dockerd inside a container (ci/swarm-bed.sh). What it needs, and why:
# - the cgroup v1 hierarchies read-write: the outer engine mounts them read-only, so a tmpfs on
#   /sys/fs/cgroup and one cgroup mount per hierarchy the host has (/proc/self/cgroup), plus
#   the cgroup2 one at unified/;
# - inner containers in a private cgroup namespace (--default-cgroupns-mode=private): with the
#   host's, runc cannot find their cgroup under these mounts ("stat /sys/fs/cgroup/<id>");
# - /var/lib/docker on a volume, not the outer overlay filesystem, so overlay2 works inside
#   (and not a tmpfs: Docker mounts those noexec).
# The API is a unix socket in /run/bed, a folder of the host: nothing listens on the network.
set -eu
mount -t tmpfs cgroup /sys/fs/cgroup
grep -v '^0::' /proc/self/cgroup | cut -d: -f2 | while read -r subs; do
    [ -n "$subs" ] || continue
    case $subs in
    name=*) opts="none,$subs" dir=${subs#name=} ;;
    *) opts=$subs dir=$subs ;;
    esac
    mkdir -p "/sys/fs/cgroup/$dir"
    mount -t cgroup -o "$opts" cgroup "/sys/fs/cgroup/$dir"
done
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 none /sys/fs/cgroup/unified || true
mkdir -p /run/bed
exec dockerd --default-cgroupns-mode=private \
    --host=unix:///run/bed/docker.sock --host=unix:///var/run/docker.sock "$@"
