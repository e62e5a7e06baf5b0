#!/usr/bin/env bash
# Runs an MPI job of 2 ranks on two "hosts" that are Linux network namespaces joined by a
# veth pair, so that every byte between the ranks crosses a real network interface (TCP),
# as it would between two machines, instead of shared memory on one machine.
#
#   scripts/two_host_mpirun.sh [--keep] [--timeout S] [--expect-bytes N] -- PROGRAM [ARGS...]
#
#   host A: namespace moe_hostA_<pid>, hostname moe-hostA, moe-vA 10.77.0.1/24, rank 0, mpirun
#   host B: namespace moe_hostB_<pid>, hostname moe-hostB, moe-vB 10.77.0.2/24, rank 1
#
# Both namespaces see the same filesystem, so PROGRAM's path works on both hosts.
# mpirun reaches host B the way it reaches a remote machine, through its rsh/ssh launch
# agent; the agent here is a generated script that runs the command in the namespace that
# owns the address instead of logging in over ssh.
#
#   --keep            leave the namespaces up afterwards (prints how to remove them)
#   --timeout S       kill the job after S seconds (default 300); the script then still tears
#                     the namespaces down, which a test runner's own kill (SIGKILL) would not
#   --expect-bytes N  fail (exit 1) unless the veth carried at least N bytes each way
#
# Exit status: the job's; 124 when it timed out; 77 when the namespaces cannot be made (not
# root, no CAP_NET_ADMIN/CAP_SYS_ADMIN, iproute2 missing, no veth support), which ctest reads
# as "skipped" (SKIP_RETURN_CODE 77); 2 for a usage error.
set -uo pipefail

usage() {
    echo "usage: $0 [--keep] [--timeout S] [--expect-bytes N] -- PROGRAM [ARGS...]" >&2
    exit 2
}

keep=0
timeout_s=300
expect_bytes=0
while (($#)); do
    case "$1" in
        --keep) keep=1 ;;
        --timeout) timeout_s="${2:?--timeout needs seconds}"; shift ;;
        --expect-bytes) expect_bytes="${2:?--expect-bytes needs a byte count}"; shift ;;
        --) shift; break ;;
        *) echo "two_host_mpirun: unknown option '$1'" >&2; usage ;;
    esac
    shift
done
(($#)) || usage

skip() {
    echo "two_host_mpirun: SKIPPED: $*" >&2
    exit 77
}

MPIRUN="${MPIRUN:-mpirun}"
command -v ip >/dev/null || skip "'ip' (iproute2) not found"
command -v unshare >/dev/null || skip "'unshare' (util-linux) not found"
command -v "$MPIRUN" >/dev/null || { echo "two_host_mpirun: '$MPIRUN' not found" >&2; exit 2; }

# The pid suffix keeps two runs at once (two build trees testing together) from colliding:
# namespace names are global. Interface names and addresses live inside the namespaces
# (the veth is created directly in them), so they need no suffix.
NS_A="moe_hostA_$$"
NS_B="moe_hostB_$$"
HOST_A="moe-hostA" # hostnames may not contain '_'
HOST_B="moe-hostB"
IF_A="moe-vA"
IF_B="moe-vB"
IP_A="10.77.0.1"
IP_B="10.77.0.2"
SUBNET="10.77.0.0/24"

work="$(mktemp -d "${TMPDIR:-/tmp}/two_host_mpirun.XXXXXX")"
made_ns=()

# shellcheck disable=SC2317 # called by the EXIT trap
teardown() {
    if ((keep)); then
        echo "two_host_mpirun: kept ${made_ns[*]:-nothing} and $work; remove with:"
        for ns in "${made_ns[@]}"; do echo "  ip netns del $ns"; done
        echo "  rm -r $work"
        return
    fi
    # Deleting a namespace deletes its end of the veth, which deletes the pair.
    for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$work"
}
# On a signal, stop the job first (TERM to `timeout`, which relays it to mpirun, which stops
# its daemons and ranks), then tear down: deleting a namespace under live ranks would leave
# them hanging on a vanished interface.
job_pid=""
# shellcheck disable=SC2317 # called by the traps
on_signal() { # exit status
    if [[ -n "$job_pid" ]]; then
        kill -TERM "$job_pid" 2>/dev/null
        wait "$job_pid"
    fi
    exit "$1"
}
trap teardown EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# --- network ------------------------------------------------------------------------------
if ! err="$(ip netns add "$NS_A" 2>&1)"; then
    (($(id -u) == 0)) || err="$err (not root: uid $(id -u))"
    skip "cannot create a network namespace: $err"
fi
made_ns+=("$NS_A")
err="$(ip netns add "$NS_B" 2>&1)" || skip "cannot create a second network namespace: $err"
made_ns+=("$NS_B")
err="$(ip link add "$IF_A" netns "$NS_A" type veth peer name "$IF_B" netns "$NS_B" 2>&1)" ||
    skip "cannot create a veth pair: $err"
setup_host() { # namespace interface address
    # No IPv6 on the link: its neighbour discovery would add a few hundred bytes of its
    # own to the counters we report. Best effort, as a kernel may lack IPv6 altogether.
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
    ip -n "$1" link set lo up &&
        ip -n "$1" addr add "$3/24" dev "$2" &&
        ip -n "$1" link set "$2" up
}
err="$( (setup_host "$NS_A" "$IF_A" "$IP_A" && setup_host "$NS_B" "$IF_B" "$IP_B") 2>&1)" ||
    skip "cannot configure the veth pair: $err"

echo "two_host_mpirun: host A: netns $NS_A, hostname $HOST_A, $IF_A $IP_A/24 (mpirun, rank 0)"
echo "two_host_mpirun: host B: netns $NS_B, hostname $HOST_B, $IF_B $IP_B/24 (rank 1)"

# --- launch agent and hostfile ------------------------------------------------------------
# mpirun calls the agent as `AGENT [ssh-style options] HOST COMMAND...`, where COMMAND is a
# shell command line (the orted daemon with its options), as ssh would hand it to the remote
# shell. The agent is a child of mpirun, so the daemon inherits mpirun's environment (PATH,
# LD_LIBRARY_PATH, OMPI_*), and no -x forwarding is needed. `unshare --uts` gives each host
# its own hostname, so MPI_Get_processor_name differs as on two machines.
agent="$work/netns_rsh.sh"
cat >"$agent" <<EOF
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host="\$1"; shift
case "\$host" in
    $IP_A) ns=$NS_A hn=$HOST_A ;;
    $IP_B) ns=$NS_B hn=$HOST_B ;;
    *) echo "netns_rsh: no namespace for host '\$host'" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$1"' "\$hn" "\$*"
EOF
chmod +x "$agent"

hostfile="$work/hostfile"
printf '%s slots=1\n%s slots=1\n' "$IP_A" "$IP_B" >"$hostfile"

# shellcheck disable=SC2054 # "tcp,self" is one argument
mpirun_args=(
    -np 2
    --hostfile "$hostfile" # one slot per address: rank 0 on host A, rank 1 on host B
    --map-by node
    # Namespaces need root; OpenMPI refuses to run as root without this.
    --allow-run-as-root
    # Launch remote daemons with rsh/ssh-style agent, not a batch system (a SLURM
    # allocation in CI would otherwise be picked up), and make the agent ours, not ssh.
    --mca plm rsh
    --mca plm_rsh_agent "$agent"
    # Point-to-point through ob1 and the TCP byte-transfer layer only: on a machine with
    # UCX or libfabric hardware, pml ucx / mtl ofi would otherwise win and, sharing the
    # same machine, could bypass the veth. `self` is a rank sending to itself.
    --mca pml ob1
    --mca btl tcp,self
    # Only the veth subnet for MPI traffic and for the runtime's own (daemon) traffic, so
    # that a stray interface can never carry the bytes we mean to measure.
    --mca btl_tcp_if_include "$SUBNET"
    --mca oob_tcp_if_include "$SUBNET"
)

# --- run ----------------------------------------------------------------------------------
counters() { # -> "rx_bytes tx_bytes" of host A's end of the veth
    ip netns exec "$NS_A" cat "/sys/class/net/$IF_A/statistics/rx_bytes" \
        "/sys/class/net/$IF_A/statistics/tx_bytes" | tr '\n' ' '
}
read -r rx0 tx0 <<<"$(counters)"
echo "two_host_mpirun: $IF_A before: rx ${rx0} B, tx ${tx0} B"
echo "two_host_mpirun: $MPIRUN ${mpirun_args[*]} $*"

t0=$(date +%s%N)
# mpirun runs inside host A with host A's hostname; `timeout` kills it (and mpirun its
# daemons) if the job hangs, so that the namespaces are still torn down.
# It runs in the background so that `wait` can be interrupted by a signal: bash runs a trap
# only once the foreground command has finished, which for a hung job is the full timeout.
# `<&0` keeps stdin, which a background job would otherwise lose to /dev/null.
# shellcheck disable=SC2016 # $0/$@ belong to the inner shell
timeout -k 10 "$timeout_s" ip netns exec "$NS_A" unshare --uts \
    /bin/sh -c 'hostname "$0" && exec "$@"' "$HOST_A" "$MPIRUN" "${mpirun_args[@]}" "$@" <&0 &
job_pid=$!
wait "$job_pid"
rc=$?
job_pid=""
t1=$(date +%s%N)

read -r rx1 tx1 <<<"$(counters)"
drx=$((rx1 - rx0))
dtx=$((tx1 - tx0))
echo "two_host_mpirun: $IF_A after:  rx ${rx1} B, tx ${tx1} B (job: +${drx} B in, +${dtx} B out)"
((rc == 124)) && echo "two_host_mpirun: job timed out after ${timeout_s} s" >&2
ms=$(((t1 - t0) / 1000000))
printf 'two_host_mpirun: job exit status %d, %d.%03d s\n' "$rc" $((ms / 1000)) $((ms % 1000))

if ((rc == 0 && (drx < expect_bytes || dtx < expect_bytes))); then
    echo "two_host_mpirun: FAILED: expected at least $expect_bytes B each way over the veth" >&2
    rc=1
fi
exit "$rc"
