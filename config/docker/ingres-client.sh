#!/bin/sh
# Puts the Ingres client runtime into the image being built (Dockerfile, stage
# ingres-client):
#
#   ingres-client.sh DEST CONTEXT BASE_ROOT
#
# DEST receives the `ingres` tree, so that DEST is the image's II_SYSTEM.
# The build arguments say where the tree comes from (README, "Deploying"):
#   INGRES_SOURCE=tarball (default): CONTEXT/$INGRES_CLIENT_TARBALL, a tar.gz
#       of an installed client's $II_SYSTEM/ingres;
#   INGRES_SOURCE=image: BASE_ROOT$INGRES_BASE_II_SYSTEM/ingres, where
#       BASE_ROOT is the INGRES_BASE image's file system.
# It fails, saying what to change, unless ingres/lib/libiiapi.1.so arrives.
set -eu

LIBRARY=ingres/lib/libiiapi.1.so

die() {
    printf '%s\n' "$@" >&2
    exit 1
}

from_tarball() {
    tarball="${INGRES_CLIENT_TARBALL:-ingres-client/ingres-client.tar.gz}"
    if [ ! -f "$context/$tarball" ]; then
        die "No Ingres client tarball at $tarball in the build context." \
            "Make one from an installed client: tar -C \"\$II_SYSTEM\" -czf $tarball ingres" \
            "or build with --build-arg INGRES_SOURCE=image --build-arg INGRES_BASE=<image>," \
            "or try the stack without Actian's client: docker build --target demo ."
    fi
    mkdir -p "$dest"
    tar -xzf "$context/$tarball" -C "$dest" --no-same-owner
    if [ ! -f "$dest/$LIBRARY" ]; then
        die "$tarball must hold $LIBRARY (an archive of \$II_SYSTEM/ingres)"
    fi
}

from_image() {
    ii_system="${INGRES_BASE_II_SYSTEM:-/opt/Actian/IngresII}"
    if [ ! -f "$base_root$ii_system/$LIBRARY" ]; then
        die "INGRES_BASE has no $ii_system/$LIBRARY: set INGRES_BASE to the image that holds" \
            "the client and INGRES_BASE_II_SYSTEM to its II_SYSTEM"
    fi
    mkdir -p "$dest"
    # Symbolic links stay links (the client's libraries use them); owners do not carry over.
    cp -R -P "$base_root$ii_system/ingres" "$dest/"
}

if [ "$#" -ne 3 ]; then
    die "usage: $0 DEST CONTEXT BASE_ROOT"
fi
dest=$1
context=$2
base_root=$3

case "${INGRES_SOURCE:-tarball}" in
    tarball) from_tarball ;;
    image) from_image ;;
    *) die "INGRES_SOURCE=$INGRES_SOURCE: use tarball or image" ;;
esac
