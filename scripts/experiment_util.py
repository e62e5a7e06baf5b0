"""Helpers shared by the experiment scripts: run a command with its output in a log file,
and summarise repeated measurements."""
import math
import pathlib
import statistics
import subprocess
import sys
import time

# Two-sided 95% quantiles of Student's t for n - 1 degrees of freedom (n = 2..30), so that a
# confidence interval needs no SciPy.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045]


def run(cmd, log):
    """Runs cmd with stdout and stderr into `log`; exits naming the command on failure.
    Returns the wall time in seconds."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                 f"see {log}:\n{pathlib.Path(log).read_text()[-2000:]}")
    return time.time() - start


def mean_ci95(values):
    """(mean, half-width of the 95% confidence interval of the mean) of a list."""
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return m, float("nan")
    t = _T95[min(n - 2, len(_T95) - 1)] if n <= 31 else 1.96
    return m, t * statistics.stdev(values) / math.sqrt(n)
