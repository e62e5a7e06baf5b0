#!/usr/bin/env bash
# Runs a command of the README on a bare Debian 12, as a new user would: proves that the
# quick start works on a freshly installed machine and not only on one that happens to have
# the right packages already.
#
#   scripts/fresh_machine_check.sh [--keep] [COMMAND]      (as root)
#
# 1. makes a bare Debian 12 (bookworm) root with `mmdebstrap --variant=minbase`, plus only
#    what a user who follows the README has: git and make (they cloned the repository and
#    type make) and ca-certificates. Its apt sources are this machine's Debian mirrors and
#    its apt proxy/validity settings; this machine's CA bundle, /etc/pip.conf, resolv.conf
#    and hosts are copied in so apt and pip work there as they do here;
# 2. clones the committed HEAD of this repository into /root/moe.cpp in that root (what is
#    tested is exactly what is committed; uncommitted changes are not);
# 3. runs COMMAND there (default: make test) with bash, as root, in a chroot with /proc,
#    /sys and /dev mounted (and the root bind-mounted onto itself, so that it is a mount
#    point as / is on a real machine), and a clean environment (HOME=/root, standard PATH,
#    LANG=C.UTF-8, any http(s)_proxy/no_proxy of the caller).
# Afterwards (also on failure, Ctrl-C or SIGTERM) it stops what still runs in the root,
# unmounts everything under it and removes it. A root left behind by a run that was killed
# with SIGKILL is removed by the next run.
#
#   --keep   keep the root (unmounted) and print where it is and how to enter it
#   --help   this text
#
# Example: scripts/fresh_machine_check.sh 'make test && build/moe demo --set train.steps=50'
#
# Environment: FRESH_MACHINE_TMPDIR (default /var/tmp) is where the root is made; it needs
# about 12 GiB free.
#
# Exit status: COMMAND's; 77 when a root cannot be made here (not root, mounts not allowed,
# not enough space, mmdebstrap missing and not installable, or mmdebstrap failing); 2 for a
# usage error; 1 when cloning or preparing the root fails.
set -uo pipefail

SUITE=bookworm
NEED_GIB=12
prog="fresh_machine_check"

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

keep=0
command_args=()
while (($#)); do
    case "$1" in
        --keep) keep=1 ;;
        --help | -h) usage; exit 0 ;;
        --) shift; command_args+=("$@"); break ;;
        -*) echo "$prog: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) command_args+=("$1") ;;
    esac
    shift
done
COMMAND="${command_args[*]:-make test}"

t_start=$SECONDS
t_stage=$SECONDS
stage_times=()
clock() { printf '%02d:%02d' $(((SECONDS - t_start) / 60)) $(((SECONDS - t_start) % 60)); }
say() { echo "$prog: [$(clock)] $*"; }
stage() {  # stage NAME: prints the start of a stage
    t_stage=$SECONDS
    echo
    say "=== $*"
}
stage_done() {  # stage_done NAME: prints and records how long the stage took
    local s=$((SECONDS - t_stage))
    stage_times+=("$(printf '%-28s %4d s' "$1" "$s")")
    say "=== $1: $2 in ${s} s"
}
cannot() {
    echo "$prog: CANNOT MAKE A FRESH ROOT HERE: $*" >&2
    exit 77
}

# ---- checks that need nothing made yet -------------------------------------------------
[ "$(id -u)" -eq 0 ] || cannot "must run as root (chroot, mounts and apt need it); try sudo $0"
script_dir="$(cd "$(dirname "$0")" && pwd)"
repo="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null)" ||
    { echo "$prog: $script_dir is not in a git repository" >&2; exit 1; }
head="$(git -C "$repo" rev-parse HEAD)" || { echo "$prog: no commit in $repo" >&2; exit 1; }
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    say "note: $repo has uncommitted changes; they are NOT tested (only commit ${head:0:12} is)"
fi

base="${FRESH_MACHINE_TMPDIR:-/var/tmp}"
mkdir -p "$base" 2>/dev/null || cannot "cannot create $base"
base="$(cd "$base" && pwd -P)"  # as /proc/PID/root will show it

# ---- cleanup, also of roots left by a run that was killed ------------------------------
mounts_under() {  # mount points under $1, deepest first (one line per mount, repeats kept)
    awk -v r="$1/" 'substr($2, 1, length(r)) == r { print $2 }' /proc/self/mounts |
        sed 's/\\040/ /g' | sort -r
}
kill_inside() {  # stops every process whose root directory is $1
    local root="$1" sig p n
    for sig in TERM TERM TERM KILL; do
        n=0
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] || continue
            kill "-$sig" "${p#/proc/}" 2>/dev/null && n=$((n + 1))
        done
        ((n)) || return 0
        [ "$sig" = KILL ] || sleep 2
    done
}
remove_work() {  # remove_work DIR [keep]: stop, unmount, then delete DIR (unless keep)
    local work="$1" keep_it="${2:-0}" root="$1/root" m pass
    [ -d "$root" ] && kill_inside "$root"
    for pass in 1 2 3 4 5; do
        [ -n "$(mounts_under "$work")" ] || break
        while read -r m; do
            [ -n "$m" ] || continue
            if ((pass < 4)); then umount "$m" 2>/dev/null; else umount -l "$m" 2>/dev/null; fi
        done < <(mounts_under "$work")
    done
    if [ -n "$(mounts_under "$work")" ]; then
        echo "$prog: could not unmount everything under $work; NOT removing it:" >&2
        mounts_under "$work" >&2
        return 1
    fi
    if ((keep_it)); then
        : >"$work/kept"
        rm -f "$work/owner.pid"
        return 0
    fi
    # --one-file-system: a guard on top of the check above; never walk into a mount.
    rm -rf --one-file-system "$work"
}

for old in "$base"/moe-fresh.*; do
    [ -d "$old" ] || continue
    [ -e "$old/kept" ] && continue
    pid="$(cat "$old/owner.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then continue; fi  # another run, alive
    say "removing $old, left by an earlier run that was killed"
    remove_work "$old" || true
done

avail_kib="$(df -Pk "$base" | awk 'NR == 2 { print $4 }')"
if [ -z "$avail_kib" ] || ((avail_kib < NEED_GIB * 1024 * 1024)); then
    cannot "only $((${avail_kib:-0} / 1024 / 1024)) GiB free in $base, need $NEED_GIB GiB" \
        "(set FRESH_MACHINE_TMPDIR to a roomier place)"
fi

work="$(mktemp -d "$base/moe-fresh.XXXXXX")" || cannot "cannot create a directory in $base"
echo $$ >"$work/owner.pid"
root="$work/root"
child=""
status=1

# Long steps run in the background and are waited for: bash runs a trap only once the
# foreground child has ended, but interrupts `wait` at once. `bg_wait --log FILE CMD...`
# sends CMD's output to FILE (a redirection of bg_wait itself would also take the traps'
# messages).
bg_wait() {
    if [ "$1" = --log ]; then
        local log="$2"
        shift 2
        "$@" >"$log" 2>&1 &
    else
        "$@" &
    fi
    child=$!
    wait "$child"
    local rc=$?
    child=""
    return "$rc"
}

# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
    local rc=$? _
    trap '' INT TERM HUP
    if [ -n "$child" ]; then  # let it stop (mmdebstrap cleans up after itself)
        kill -TERM "$child" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$child" 2>/dev/null || break; sleep 1; done
    fi
    if ((keep)); then
        remove_work "$work" 1 &&
            say "kept the root in $root; enter it with:" &&
            echo "  for d in proc sys dev; do mount --rbind /\$d $root/\$d; mount --make-rslave $root/\$d; done" &&
            echo "  chroot $root /bin/bash -l      # and afterwards: umount -R $root/{proc,sys,dev}" &&
            echo "  rm -rf $work                  # to remove it, once unmounted"
    else
        remove_work "$work" && say "removed $work"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'echo; say "interrupted (SIGINT): cleaning up"; exit 130' INT
trap 'say "terminated (SIGTERM): cleaning up"; exit 143' TERM
trap 'say "hangup (SIGHUP): cleaning up"; exit 129' HUP

# Mounts must be allowed here (some containers forbid them): try one before anything else.
mkdir -p "$work/mount-probe"
mount --bind "$work/mount-probe" "$work/mount-probe" 2>/dev/null ||
    cannot "bind mounts are not allowed here (container without CAP_SYS_ADMIN?)"
umount "$work/mount-probe"
rmdir "$work/mount-probe"
command -v chroot >/dev/null || cannot "no chroot command"

# ---- 1. the root -----------------------------------------------------------------------
stage "making a bare Debian 12 root (mmdebstrap --variant=minbase) in $root"
if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap on this machine"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends mmdebstrap; } >"$work/mmdebstrap-install.log" 2>&1 ||
        { tail -20 "$work/mmdebstrap-install.log" >&2; cannot "mmdebstrap is missing and apt-get could not install it"; }
fi

# This machine's Debian mirrors for the suite, its updates and security, as apt itself reads
# them from sources.list and sources.list.d (either format); other repositories are left out.
declare -A comps=()
# shellcheck disable=SC2016 # $(...) are apt's format fields, not the shell's
index_format='$(REPO_URI)|$(RELEASE)|$(COMPONENT)'
order=()
while IFS='|' read -r uri rel comp; do
    case "$rel" in "$SUITE" | "$SUITE"-updates | "$SUITE"-security) ;; *) continue ;; esac
    key="$uri $rel"
    [ -n "${comps[$key]+x}" ] || order+=("$key")
    case " ${comps[$key]:-} " in *" $comp "*) ;; *) comps[$key]="${comps[$key]:-} $comp" ;; esac
done < <(apt-get indextargets --format "$index_format" 2>/dev/null | sort -u)
mirrors=()
for key in "${order[@]}"; do mirrors+=("deb $key${comps[$key]}"); done
if ((${#mirrors[@]} == 0)); then
    say "no $SUITE entries in this machine's apt sources; using deb.debian.org"
    mirrors=("deb http://deb.debian.org/debian $SUITE main"
             "deb http://deb.debian.org/debian $SUITE-updates main"
             "deb http://deb.debian.org/debian-security $SUITE-security main")
fi
# This machine's apt settings for reaching them: proxies, and validity checks turned off
# for a snapshot mirror. They stay in the root's apt configuration, so apt works there.
aptopts=()
while read -r line; do
    aptopts+=("--aptopt=$line")
done < <(apt-config dump 2>/dev/null |
    grep -E '^Acquire::((https?|ftp)::Proxy(::[^ ]+)? |Check-Valid-Until |Check-Date |Max-ValidTime |(https?)::(Verify-Peer|Verify-Host) )')
for v in http_proxy HTTP_PROXY; do
    if [ -n "${!v:-}" ] && ! printf '%s\n' "${aptopts[@]}" | grep -q 'Acquire::http::Proxy '; then
        aptopts+=("--aptopt=Acquire::http::Proxy \"${!v}\"")
    fi
done
for m in "${mirrors[@]}"; do say "apt source: $m"; done
for o in "${aptopts[@]}"; do say "apt option: ${o#--aptopt=}"; done

bg_wait --log "$work/mmdebstrap.log" mmdebstrap --mode=root --variant=minbase --include=git,make,ca-certificates \
    "${aptopts[@]}" "$SUITE" "$root" "${mirrors[@]}" ||
    { tail -30 "$work/mmdebstrap.log" >&2; cannot "mmdebstrap failed (log above)"; }

# What lets package clients through this machine's network as they get through here.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # Local CAs first, so that a later update-ca-certificates in the root keeps them; then
    # the bundle itself.
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    fi
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
[ -f /etc/pip.conf ] && cp -L /etc/pip.conf "$root/etc/pip.conf"
for f in /etc/resolv.conf /etc/hosts; do
    [ -f "$f" ] && { rm -f "$root$f"; cp -L "$f" "$root$f"; }
done
stage_done "making the root" "$(du -sh --one-file-system "$root" | cut -f1) root made"

# ---- 2. the clone ----------------------------------------------------------------------
stage "cloning $repo at ${head:0:12} into /root/moe.cpp"
{ git clone --quiet --no-hardlinks "$repo" "$root/root/moe.cpp" &&
    git -C "$root/root/moe.cpp" checkout --quiet --detach "$head"; } ||
    { echo "$prog: cloning failed" >&2; exit 1; }
stage_done "cloning" "commit $(git -C "$root/root/moe.cpp" rev-parse --short HEAD) checked out"

# ---- 3. the command --------------------------------------------------------------------
# The root a mount point of its own, as / is on a real machine (`ip netns exec`, used by the
# two-host MPI tests, does `mount --make-rslave /`, which fails on a plain directory);
# private, so nothing mounted under it shows up elsewhere.
{ mount --bind "$root" "$root" && mount --make-private "$root"; } ||
    cannot "bind-mounting the root onto itself failed"
for d in proc sys dev; do
    mount --rbind "/$d" "$root/$d" || cannot "bind-mounting /$d into the root failed"
    # Slave: unmounting the root's copies later must not propagate to this machine's own.
    mount --make-rslave "$root/$d" || cannot "mount --make-rslave $root/$d failed"
done

env_vars=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8
          "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
          "TERM=${TERM:-dumb}")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY CI; do
    [ -n "${!v:-}" ] && env_vars+=("$v=${!v}")
done

stage "running in the fresh root, in /root/moe.cpp: $COMMAND"
# In a session of its own: Ctrl-C reaches this script only, whose traps stop everything
# that runs in the root.
bg_wait setsid --wait chroot "$root" /usr/bin/env -i "${env_vars[@]}" \
    /bin/bash -c "cd /root/moe.cpp && { $COMMAND
}" </dev/null
status=$?
stage_done "running the command" "exit status $status"

echo
say "summary (commit ${head:0:12}, command: $COMMAND)"
for s in "${stage_times[@]}"; do echo "    $s"; done
printf '    %-28s %4d s\n' "total" $((SECONDS - t_start))
if ((status == 0)); then say "PASSED"; else say "FAILED: exit status $status"; fi
exit "$status"
