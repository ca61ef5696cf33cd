#!/bin/sh
# Build the e2e/airgap test images from Debian's busybox-static, without a registry and without
# Rust: docker-archive tarballs that `ctr images import` and k8slite's images directory accept.
#
#   build-test-images.sh OUTDIR
#
#   OUTDIR/busybox.tar  docker.io/library/busybox:latest  busybox-static, every applet a symlink,
#                       /bin/sh, /tmp 1777, /etc/passwd + /etc/group with root, nobody (65534)
#                       and user (1000); CMD ["sh"]
#   OUTDIR/nginx.tar    docker.io/library/nginx:latest    the same base plus
#                       /usr/share/nginx/html/index.html ("<h1>Welcome to nginx!</h1>"); CMD runs
#                       busybox httpd in the foreground on :80 under a shell that exits on SIGTERM
#                       (PID 1 ignores SIGTERM without a handler); EXPOSE 80
#
# Layers and archives are reproducible (sorted, mtime 0, owner 0): rebuilding gives the same image
# IDs. Needs: busybox-static (BUSYBOX, default /bin/busybox), GNU tar, sha256sum, printf.
set -eu

OUT=${1:?usage: build-test-images.sh OUTDIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}

[ -x "$BUSYBOX" ] || { echo "prerequisite missing: busybox-static ($BUSYBOX)" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "prerequisite missing: a static busybox ($BUSYBOX is dynamically linked; apt-get install busybox-static)" >&2
    exit 1
fi
for c in tar sha256sum; do
    command -v "$c" >/dev/null 2>&1 || { echo "prerequisite missing: $c" >&2; exit 1; }
done

case $(uname -m) in
    x86_64) ARCH=amd64 VARIANT= ;;
    aarch64 | arm64) ARCH=arm64 VARIANT= ;;
    armv7*) ARCH=arm VARIANT=v7 ;;
    armv6*) ARCH=arm VARIANT=v6 ;;
    i?86) ARCH=386 VARIANT= ;;
    *) ARCH=$(uname -m) VARIANT= ;;
esac
if [ -n "$VARIANT" ]; then PLATFORM="\"architecture\":\"$ARCH\",\"variant\":\"$VARIANT\""; else PLATFORM="\"architecture\":\"$ARCH\""; fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

TAR_REPRO="--sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 --format=gnu"

# make_archive ROOTFS REPOTAG CONFIG_OBJECT OUTFILE
# CONFIG_OBJECT is the image config's "config" member (Env, Cmd, ExposedPorts, ...).
make_archive() {
    ma_root=$1 ma_tag=$2 ma_cfg=$3 ma_out=$4
    ma_d=$(mktemp -d "$WORK/arch.XXXXXX")
    # shellcheck disable=SC2086
    tar $TAR_REPRO -C "$ma_root" -cf "$ma_d/layer.tar" .
    ma_diff=$(sha256sum "$ma_d/layer.tar" | cut -d' ' -f1)
    mkdir "$ma_d/$ma_diff"
    mv "$ma_d/layer.tar" "$ma_d/$ma_diff/layer.tar"
    printf '{%s,"os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"k8slite packaging/images/build-test-images.sh"}]}' \
        "$PLATFORM" "$ma_cfg" "$ma_diff" >"$ma_d/config.json"
    ma_cfgid=$(sha256sum "$ma_d/config.json" | cut -d' ' -f1)
    mv "$ma_d/config.json" "$ma_d/$ma_cfgid.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
        "$ma_cfgid" "$ma_tag" "$ma_diff" >"$ma_d/manifest.json"
    # shellcheck disable=SC2086
    tar $TAR_REPRO -C "$ma_d" -cf "$ma_out.tmp" manifest.json "$ma_cfgid.json" "$ma_diff"
    mv -f "$ma_out.tmp" "$ma_out"
    echo "built $ma_out ($ma_tag, image id sha256:$ma_cfgid)"
}

# busybox_rootfs DIR: the common base.
busybox_rootfs() {
    br=$1
    mkdir -p "$br"
    chmod 0755 "$br"
    mkdir -p "$br/bin" "$br/etc" "$br/tmp" "$br/root" "$br/proc" "$br/sys" "$br/dev" \
        "$br/var/log" "$br/home/user" "$br/usr/bin" "$br/usr/sbin" "$br/sbin"
    chmod 1777 "$br/tmp"
    chmod 0755 "$br/bin" "$br/etc" "$br/root" "$br/home/user"
    cp "$BUSYBOX" "$br/bin/busybox"
    chmod 0755 "$br/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$br/bin/$applet"
    done
    printf '%s\n' \
        'root:x:0:0:root:/root:/bin/sh' \
        'user:x:1000:1000:user:/home/user:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$br/etc/passwd"
    printf '%s\n' 'root:x:0:' 'user:x:1000:' 'nogroup:x:65534:' >"$br/etc/group"
    chmod 0644 "$br/etc/passwd" "$br/etc/group"
}

ENV_PATH='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

BB=$WORK/busybox
busybox_rootfs "$BB"
make_archive "$BB" docker.io/library/busybox:latest \
    "{$ENV_PATH,\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}" "$OUT/busybox.tar"

NG=$WORK/nginx
busybox_rootfs "$NG"
mkdir -p "$NG/usr/share/nginx/html"
printf '%s\n' '<!DOCTYPE html>' '<html><head><title>Welcome to nginx!</title></head>' \
    '<body><h1>Welcome to nginx!</h1><p>k8slite test image (busybox httpd)</p></body></html>' \
    >"$NG/usr/share/nginx/html/index.html"
chmod 0644 "$NG/usr/share/nginx/html/index.html"
NGINX_CMD="trap 'exit 0' TERM; httpd -f -v -p 80 -h /usr/share/nginx/html & wait"
make_archive "$NG" docker.io/library/nginx:latest \
    "{$ENV_PATH,\"Cmd\":[\"sh\",\"-c\",\"$NGINX_CMD\"],\"ExposedPorts\":{\"80/tcp\":{}},\"WorkingDir\":\"/\",\"StopSignal\":\"SIGTERM\"}" \
    "$OUT/nginx.tar"
