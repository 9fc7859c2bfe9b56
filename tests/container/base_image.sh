#!/usr/bin/env bash
# A stand-in for docker.io/library/python:3.11-slim-bookworm, built from Debian packages,
# for machines that cannot reach Docker Hub (CI here: only PyPI, Debian and npm are
# reachable). The Dockerfile is built unchanged on it; it is a test fixture, not a product.
#
#   tests/container/base_image.sh [IMAGE]     (root; needs podman and mmdebstrap)
#
# Idempotent: does nothing when the image already exists (the real one, or this stand-in).
# What it mirrors from the official image: Debian bookworm, Python 3.11 with `python` and
# `pip` in /usr/local/bin (here a venv made in /usr/local over Debian's python3), PATH,
# LANG=C.UTF-8, CA certificates, netbase and tzdata. Where it differs, on purpose: the
# machine's locally added CA certificates (its HTTPS proxy's) are trusted in the image, so
# that pip reaches PyPI during the build. That needs no PIP_CERT or SSL_CERT_FILE: Debian's
# pip (which `python -m venv` puts in every venv here) reads the system store
# /etc/ssl/certs/ca-certificates.crt, not a certifi bundle of its own.
set -euo pipefail

IMAGE="${1:-docker.io/library/python:3.11-slim-bookworm}"
MIRRORS=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || {
        echo "$0 needs $tool: sudo apt-get install -y --no-install-recommends" \
            "podman runc mmdebstrap" >&2
        exit 1
    }
done
if podman image exists "$IMAGE"; then
    exit 0
fi

# The tarball goes to a file first: piping mmdebstrap into `podman import` would import
# (and tag) a truncated root file system when mmdebstrap fails half-way.
tarball="$(mktemp --tmpdir=/var/tmp python-standin.XXXXXX.tar)"
trap 'rm -f "$tarball"' EXIT

echo "Building the stand-in $IMAGE with mmdebstrap (under a minute)" >&2
mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    --customize-hook='[ ! -d /usr/local/share/ca-certificates ] ||
        cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='chroot "$1" python3 -m venv /usr/local' \
    bookworm "$tarball" "${MIRRORS[@]}" </dev/null

podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "stand-in for python:3.11-slim-bookworm (tests/container/base_image.sh)" \
    "$tarball" "$IMAGE" >/dev/null
echo "Built $IMAGE" >&2
