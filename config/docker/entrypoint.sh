#!/bin/sh
# Entrypoint of the dbevent-bridge image.
#
# 1. Checks that the Ingres client runtime is where pyngres will look for it:
#    pyngres loads $II_SYSTEM/ingres/lib/libiiapi.1.so at import time, and a
#    missing library would otherwise surface as a ctypes traceback (or, with
#    II_SYSTEM unset, as a silent exit with status 0).
# 2. Puts $II_SYSTEM/ingres/lib first on LD_LIBRARY_PATH, as Ingres's own
#    environment scripts do, so that the libraries libiiapi.1.so depends on
#    (libq, libcompat, ...) resolve from the same installation.
# 3. Checks that the spool directory can be written by this user (a volume
#    mounted from a root-owned host directory is the usual mistake).
# 4. Replaces itself with `dbevent-bridge "$@"` (default: `run`), so the bridge
#    is the process that receives SIGTERM from `docker stop`.
#
# Exit status 78 (EX_CONFIG) means the container is set up wrongly; the
# message on stderr says what to change. Any other status is the bridge's own.
set -eu

EX_CONFIG=78
DEFAULT_SPOOL_PATH=/var/lib/dbevent-bridge/spool.sqlite3

die() {
    printf 'dbevent-bridge-entrypoint: %s\n' "$@" >&2
    exit "$EX_CONFIG"
}

check_ingres_client() {
    if [ -z "${II_SYSTEM:-}" ]; then
        die "II_SYSTEM is not set: it must name the directory that holds ingres/lib/libiiapi.1.so." \
            "Build the image with INGRES_BASE or INGRES_CLIENT_TARBALL (see the README, 'Deploying')," \
            "or build the 'demo' target, which uses the simulator."
    fi
    if [ ! -d "$II_SYSTEM" ]; then
        die "II_SYSTEM=$II_SYSTEM is not a directory."
    fi
    lib="$II_SYSTEM/ingres/lib/libiiapi.1.so"
    if [ ! -f "$lib" ]; then
        die "the Ingres OpenAPI library $lib is missing." \
            "The image holds no Ingres client runtime, or II_SYSTEM points at the wrong directory."
    fi
    if [ ! -r "$lib" ]; then
        die "the Ingres OpenAPI library $lib is not readable by uid $(id -u)."
    fi
}

export_library_path() {
    libdir="$II_SYSTEM/ingres/lib"
    # An empty element in LD_LIBRARY_PATH means the current directory, so
    # never leave a trailing colon behind; never add the directory twice.
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$libdir:"*) ;;
        "::") LD_LIBRARY_PATH="$libdir" ;;
        *) LD_LIBRARY_PATH="$libdir:$LD_LIBRARY_PATH" ;;
    esac
    export LD_LIBRARY_PATH
}

check_spool_directory() {
    spool_dir=$(dirname -- "${BRIDGE_SPOOL__PATH:-$DEFAULT_SPOOL_PATH}")
    if [ -e "$spool_dir" ] && [ ! -d "$spool_dir" ]; then
        die "the spool directory $spool_dir (from BRIDGE_SPOOL__PATH) is not a directory."
    fi
    if [ -d "$spool_dir" ] && [ ! -w "$spool_dir" ]; then
        die "the spool directory $spool_dir is not writable by uid $(id -u)." \
            "Mount a volume there that this user owns (e.g. chown $(id -u):$(id -g) on the host directory)."
    fi
}

if [ "$#" -eq 0 ]; then
    set -- run
fi

# The simulator subcommands play the DBMS side and never load libiiapi.
if [ "$1" != "sim" ]; then
    check_ingres_client
    export_library_path
fi
if [ "$1" = "run" ] || [ "$1" = "demo" ]; then
    check_spool_directory
fi

exec dbevent-bridge "$@"
