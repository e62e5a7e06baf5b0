#!/usr/bin/env python3
"""Checks that an MPI training job ends by itself, with a message, when one rank dies.

1. Starts `mpirun -np R moe train CONFIG` with a step count that would run for days and a
   metrics record every step, and waits until rank 0 has written at least 3 step records to
   OUT/metrics.jsonl (so the ranks are inside the training loop, exchanging tokens with
   MPI_Alltoallv and all-reducing gradients every step).
2. Kills rank R-1 (found by OMPI_COMM_WORLD_RANK in the environment of mpirun's children)
   with SIGKILL, as a crash or the out-of-memory killer would, and times how long mpirun
   takes to exit.
3. Passes when mpirun exits within --deadline seconds (60 by default) with a non-zero status,
   its output (OUT/mpirun.log) names the dead process, and no rank of the job is left
   running. A rank still alive afterwards is killed, and the check fails.

Exit status 0 on pass, 1 on fail. Standard library only.

  scripts/kill_rank_check.py --moe build/moe --ranks 4 --out runs/kill_rank_np4
"""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every process of the job inherits this variable from mpirun (OpenMPI passes the launcher's
# environment to local ranks), so the job's ranks are found even after mpirun has exited
# and they were reparented.
TAG_VAR = "MOE_KILL_RANK_CHECK_TAG"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--moe", default=os.path.join(REPO, "build", "moe"), help="the moe binary")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (at least 2)")
    p.add_argument("--config", default=os.path.join(REPO, "recipes", "lm", "moe_fortunes.json"))
    p.add_argument("--out", required=True, help="directory for metrics.jsonl and mpirun.log")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="seconds mpirun may take to exit after the kill")
    p.add_argument("--start-timeout", type=float, default=120.0,
                   help="seconds to wait for the first 3 step records")
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--mpirun-flags", default="--allow-run-as-root --oversubscribe",
                   help="one string, split like a shell would (pass as --mpirun-flags=...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override passed to moe train (repeatable)")
    a = p.parse_args()
    if a.ranks < 2:
        p.error("--ranks must be at least 2 (one rank is killed, another must notice)")
    return a


def read_environ(pid):
    """The environment a process started with, as a dict; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def proc_state(pid):
    """(state letter, command name) from /proc/PID/stat; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces; the state follows the last ')'.
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    return stat[stat.rindex(")") + 2], name


def job_ranks(tag, launcher_pid):
    """{rank: pid} of the live (not zombie) rank processes carrying the job's tag."""
    ranks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (launcher_pid, os.getpid()):
            continue
        pid = int(entry)
        env = read_environ(pid)
        if not env or env.get(TAG_VAR) != tag or "OMPI_COMM_WORLD_RANK" not in env:
            continue
        st = proc_state(pid)
        if st is None or st[0] in ("Z", "X"):
            continue  # exited; a zombie is only waiting to be reaped
        ranks.setdefault(int(env["OMPI_COMM_WORLD_RANK"]), []).append(pid)
    return ranks


def step_records(metrics):
    """Training-step records in metrics.jsonl so far (lines with both "step" and "loss")."""
    try:
        with open(metrics) as f:
            return sum(1 for line in f if '"step"' in line and '"loss"' in line)
    except OSError:
        return 0


def log_lines(log):
    """The log split into lines; progress lines end in '\\r', so that splits too."""
    with open(log, errors="replace") as f:
        return [s.strip() for s in re.split(r"[\r\n]+", f.read()) if s.strip()]


def main():
    a = parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    metrics = os.path.join(out, "metrics.jsonl")
    log = os.path.join(out, "mpirun.log")
    if os.path.exists(metrics):
        os.remove(metrics)  # stale records of an earlier run would pass step 1 at once
    victim = a.ranks - 1

    tag = uuid.uuid4().hex
    env = dict(os.environ, **{TAG_VAR: tag})
    # threads=1: R ranks share the machine (2 cores here), more threads only oversubscribe.
    # eval_every=0: no validation pass inside the run, so every second is training steps.
    # tensorboard=false: each run would leave one more event file in OUT.
    sets = ["train.steps=1000000", "train.log_every=1", "train.threads=1",
            "train.eval_every=0", "train.tensorboard=false", f"out_dir={out}"] + a.set
    # --overwrite: OUT may hold the checkpoint of an earlier run of this check.
    cmd = [a.mpirun] + shlex.split(a.mpirun_flags) + ["-np", str(a.ranks), a.moe, "train",
                                                      a.config, "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    print("kill_rank_check: " + " ".join(shlex.quote(c) for c in cmd), flush=True)

    logf = open(log, "w")
    # A session of its own, so that a failed check can stop whatever is left of the job.
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    failures = []

    def cleanup_and_exit(msg):
        for pids in job_ranks(tag, proc.pid).values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        logf.close()
        tail = "\n".join(log_lines(log)[-30:])
        sys.exit(f"kill_rank_check: FAIL: {msg}\n--- last lines of {log} ---\n{tail}")

    # 1. Wait until the ranks are really training.
    start = time.monotonic()
    while step_records(metrics) < 3:
        if proc.poll() is not None:
            cleanup_and_exit(f"mpirun exited with status {proc.returncode} before 3 steps")
        if time.monotonic() - start > a.start_timeout:
            cleanup_and_exit(f"fewer than 3 step records in {metrics} after "
                             f"{a.start_timeout:.0f} s")
        time.sleep(0.2)
    ranks = job_ranks(tag, proc.pid)
    if sorted(ranks) != list(range(a.ranks)) or any(len(p) != 1 for p in ranks.values()):
        cleanup_and_exit(f"expected one process for each of ranks 0..{a.ranks - 1}, "
                         f"found {ranks}")
    pid = ranks[victim][0]
    print(f"kill_rank_check: training after {time.monotonic() - start:.1f} s "
          f"({step_records(metrics)} steps); ranks {dict((r, p[0]) for r, p in ranks.items())}",
          flush=True)

    # 2. Kill one rank and time mpirun's exit.
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    print(f"kill_rank_check: sent SIGKILL to rank {victim} (pid {pid})", flush=True)
    try:
        rc = proc.wait(timeout=a.deadline)
    except subprocess.TimeoutExpired:
        alive = job_ranks(tag, proc.pid)
        states = {r: [(p, proc_state(p)) for p in ps] for r, ps in alive.items()}
        cleanup_and_exit(f"mpirun still running {a.deadline:.0f} s after rank {victim} was "
                         f"killed; ranks alive: {states}")
    elapsed = time.monotonic() - killed
    logf.close()

    # 3. No rank of the job may outlive mpirun. Ranks that mpirun has just signalled can take
    #    a moment to go, so allow 5 s before calling them left over.
    leftover = job_ranks(tag, proc.pid)
    until = time.monotonic() + 5.0
    while leftover and time.monotonic() < until:
        time.sleep(0.2)
        leftover = job_ranks(tag, proc.pid)
    if leftover:
        for pids in leftover.values():
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        failures.append(f"rank processes left running after mpirun exited: {leftover} "
                        "(killed now)")

    # The message naming the dead process: OpenMPI's launcher reports the rank and pid.
    lines = log_lines(log)
    names = re.compile(rf"(rank\s+{victim}\b|\bPID\s+{pid}\b|\b{pid}\b)", re.I)
    about = re.compile(r"(signal|killed|exited|abort|terminat|died|fail|error)", re.I)
    # OpenMPI 4.1.4 prints "PID 0" for the dead rank, so the rank number is what matches.
    named = [s for s in lines
             if names.search(s) and about.search(s) and not s.startswith("step ")]
    context = [s for s in lines if about.search(s) and not s.startswith("step ")]

    if rc == 0:
        failures.append("mpirun exited with status 0 after a rank was killed")
    if elapsed > a.deadline:
        failures.append(f"mpirun took {elapsed:.1f} s, more than {a.deadline:.0f} s")
    if not named:
        failures.append(f"no line of {log} names the killed process (rank {victim}, "
                        f"pid {pid})")

    print(f"kill_rank_check: mpirun exited {elapsed:.2f} s after the kill, status {rc} "
          f"({a.ranks} ranks, rank {victim} killed)")
    print("kill_rank_check: failure message lines:")
    for s in context:
        print("  | " + s)
    if failures:
        for f in failures:
            print("kill_rank_check: FAIL: " + f)
        print(f"kill_rank_check: full output in {log}")
        return 1
    print("kill_rank_check: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
