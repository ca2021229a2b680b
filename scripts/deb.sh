#!/usr/bin/env bash
# Builds dist/exgate_<version>_<arch>.deb with Debian's dpkg-deb: the static
# binary (version stamped), bash completion, /etc/exgate/exgate.yaml (a
# conffile) and a hardened systemd unit (packaging/). ARCH=arm64 for arm64;
# OUT=dir writes it elsewhere. It prints the package's path.
#
#   scripts/deb.sh            # or: make deb
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${ARCH:-$(go env GOARCH)}
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
debversion=0.0~${version//-/.}
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
  -ldflags "-s -w -X main.version=$version -X main.commit=$(git rev-parse HEAD 2>/dev/null) -X main.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -o "$root/usr/bin/exgate" ./cmd/exgate
install -D -m 0644 packaging/exgate.yaml "$root/etc/exgate/exgate.yaml"
install -D -m 0644 packaging/exgate.service "$root/lib/systemd/system/exgate.service"
install -D -m 0644 LICENSE "$root/usr/share/doc/exgate/copyright"
mkdir -p "$root/usr/share/bash-completion/completions"
if [ "$arch" = "$(go env GOARCH)" ]; then
  "$root/usr/bin/exgate" completion bash >"$root/usr/share/bash-completion/completions/exgate"
fi
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: exgate
Version: $debversion
Architecture: $arch
Maintainer: exgate developers <exgate@localhost>
Section: net
Priority: optional
Homepage: https://github.com/exgate/exgate
Description: EMQX ExProto-compatible gateway: any device protocol to MQTT
 exgate lets devices speaking any private protocol over TCP, TLS, UDP or DTLS
 join an MQTT pub/sub world, with the protocol written as a gRPC service in
 any language. Handlers written for EMQX's ExProto gateway work unchanged.
CONTROL
echo /etc/exgate/exgate.yaml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTINST
chmod 0755 "$root/DEBIAN/postinst"
outdir=${OUT:-dist}
mkdir -p "$outdir"
out="$outdir/exgate_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
