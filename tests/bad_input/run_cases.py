#!/usr/bin/env python3
"""Runs the real `moe` command on every hostile input of one class and checks its answer.

    run_cases.py --moe build/moe --dir build/bad_input --class 3_memory [--sanitized]
    run_cases.py --moe build/moe --dir build/bad_input --class all

DIR is what make_cases.py wrote (hostile files, the tiny good run, manifest.json). Each case
runs `moe` as a careless or hostile user would type it and checks:
  - the exit status: 1 for an error (2 for a usage error), 0 where the command must work;
  - an error is ONE line on stderr, "moe CMD: ...", holding the case's expected substrings
    (the file, key or tensor at fault), and nothing of our internals ("src/", ".cpp:");
  - the wall time (the process group is killed past the limit: a hang fails) and the peak
    RSS of the child (os.wait4's rusage of that one process);
  - that the good run's checkpoint and metrics are byte-identical afterwards (sha256), and
    the same for every copy a case works on.
Cases marked with a known defect are skipped unless --include-defects is given (they state
what the command should do once the defect is fixed). Exit status: 0 when every case passed.

With --sanitized (or MOE_SANITIZED=1 in the environment: an ASan/UBSan build) time limits
are 4x longer and memory limits 4x higher.
"""

import argparse
import json
import os
import re
import shutil
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_cases import sha256  # noqa: E402  (one definition for both scripts)

CLASSES = [
    "1_deep_json",
    "2_not_regular_file",
    "3_memory",
    "4_non_finite",
    "5_dotted_keys",
    "6_strict_numbers",
    "7_non_utf8_names",
    "8_run_dir",
    "9_val_fraction",
    "10_many_tensors",
    "11_stale_tmp_and_internals",
    "12_vision",
    "13_multitask",
]

MiB = 1024 * 1024
GiB = 1024 * MiB


def metadata(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


class Result:
    def __init__(self, rc, out, err, wall, rss, timed_out):
        self.rc, self.out, self.err, self.wall, self.rss, self.timed_out = (
            rc, out, err, wall, rss, timed_out)


class Child:
    """`moe ARGS` in its own process group, output in files; waited for with os.wait4 so
    that the peak RSS is this child's alone. (posix_spawn starts it with vfork, so the
    figure has this script's own RSS, about 20 MiB, as a floor: an upper bound.)"""

    def __init__(self, t, args, env=None, log=None):
        self.t = t
        log = log or os.path.join(t.work, "last")
        self.out_path, self.err_path = log + ".out", log + ".err"
        full_env = dict(os.environ)
        full_env.pop("MOE_MEMORY_LIMIT", None)  # a case that wants a limit says so
        full_env.update(env or {})
        self.argv = [t.moe] + [str(a) for a in args]
        self.start = time.monotonic()
        self.reaped = None
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.pid = os.posix_spawn(self.argv[0], self.argv, full_env,
                                      file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                                    (os.POSIX_SPAWN_DUP2, err.fileno(), 2)],
                                      setsid=True)

    def alive(self):
        if self.reaped is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.reaped = (status, usage)
        return self.reaped is None

    def signal(self, sig):
        os.killpg(self.pid, sig)

    def wait(self, limit):
        deadline = self.start + limit
        timed_out = False
        while True:
            if not self.alive():
                status, usage = self.reaped
                break
            if time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status, usage = os.wait4(self.pid, 0)
                break
            time.sleep(0.005)
        wall = time.monotonic() - self.start
        rc = os.waitstatus_to_exitcode(status)
        with open(self.out_path, "rb") as f:
            out = f.read().decode("utf-8", "replace")
        with open(self.err_path, "rb") as f:
            err = f.read().decode("utf-8", "replace")
        return Result(rc, out, err, wall, usage.ru_maxrss * 1024, timed_out)


class Suite:
    def __init__(self, args):
        self.moe = os.path.abspath(args.moe)
        self.dir = os.path.abspath(args.dir)
        self.sanitized = args.sanitized or os.environ.get("MOE_SANITIZED", "") not in ("", "0")
        self.scale = 4 if self.sanitized else 1
        self.include_defects = args.include_defects
        self.verbose = args.verbose
        with open(os.path.join(self.dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.good = self.manifest["good_run"]
        self.good_ckpt = os.path.join(self.good, "checkpoint.safetensors")
        self.cfg = self.manifest["good_config"]
        self.cases = os.path.join(self.dir, "cases")
        self.failures, self.passed, self.skipped = [], 0, []
        self.cls = None
        self.work = None

    # --- paths -------------------------------------------------------------------------
    def C(self, *p):
        return os.path.join(self.cases, *p)

    def W(self, *p):
        return os.path.join(self.work, *p)

    def copy_run(self, name, checkpoint=None):
        """A copy of the good run directory (optionally with another checkpoint file)."""
        dst = self.W(name)
        shutil.copytree(self.good, dst)
        if checkpoint:
            shutil.copy(checkpoint, os.path.join(dst, "checkpoint.safetensors"))
        return dst

    # --- reporting ---------------------------------------------------------------------
    def fail(self, name, problems, cmd=None, res=None):
        lines = [f"FAIL  {self.cls}/{name}"] + [f"      - {p}" for p in problems]
        if cmd:
            lines.append("      command: " + " ".join(_quote(a) for a in cmd))
        if res:
            lines.append(f"      exit {res.rc}, {res.wall:.2f} s, peak RSS {res.rss / MiB:.0f} MiB")
            lines.append("      stderr: " + _indent(res.err[-3000:]))
            lines.append("      stdout: " + _indent(res.out[-1500:]))
        print("\n".join(lines), flush=True)
        self.failures.append(f"{self.cls}/{name}")

    def ok(self, name, res=None):
        self.passed += 1
        extra = f"  {res.wall:6.2f} s  {res.rss / MiB:5.0f} MiB" if res else ""
        print(f"ok    {self.cls}/{name}{extra}", flush=True)
        if res and self.verbose:
            print("      stderr: " + _indent(res.err), flush=True)

    def check(self, name, cond, problem):
        if cond:
            self.ok(name)
        else:
            self.fail(name, [problem])
        return cond

    def skip_defect(self, name, defect):
        if self.include_defects:
            return False
        self.skipped.append(f"{self.cls}/{name}: {defect}")
        print(f"skip  {self.cls}/{name}  (known defect: {defect})", flush=True)
        return True

    # --- running -----------------------------------------------------------------------
    def run(self, name, args, expect, env=None, limit=30.0, max_rss=GiB, defect=None):
        """Runs `moe ARGS` and applies `expect(res) -> [problems]` plus the common checks."""
        if defect and self.skip_defect(name, defect):
            return None
        child = Child(self, args, env, log=self.W(_safe(name)))
        res = child.wait(limit * self.scale)
        problems = []
        if res.timed_out:
            problems.append(f"still running after {limit * self.scale:.0f} s: killed (a hang)")
        else:
            if res.rss > max_rss * self.scale:
                problems.append(f"peak RSS {res.rss / MiB:.0f} MiB is over the bound of "
                                f"{max_rss * self.scale / MiB:.0f} MiB")
            problems += expect(res)
            problems += self.no_internals(res.err)
        if problems:
            self.fail(name, problems, child.argv, res)
        else:
            self.ok(name, res)
        return res

    def no_internals(self, err):
        """No sanitizer report, crash text or source location in what users see."""
        text = err.replace(self.dir, "DIR").replace(self.moe, "MOE")
        bad = [s for s in ("src/", ".cpp:", ".h:", "[p != nullptr]", "terminate called",
                           "Assertion", "Sanitizer", "runtime error:", "Segmentation fault",
                           "core dumped", "Aborted") if s in text]
        return [f"stderr exposes internals: {', '.join(repr(b) for b in bad)}"] if bad else []

    def error(self, name, args, contains, rc=1, **kw):
        """An error case: exit `rc`, one line on stderr naming what is at fault."""
        cmd = str(args[0])

        def expect(res):
            p = []
            if res.rc != rc:
                p.append(f"exit status {res.rc}, expected {rc}")
            lines = res.err.splitlines()
            if len(lines) != 1 or not res.err.endswith("\n"):
                p.append(f"stderr has {len(lines)} lines, expected one error line")
            elif not lines[0].startswith(f"moe {cmd}: "):
                p.append(f"the error line does not start with 'moe {cmd}: '")
            for s in contains:
                if s not in res.err:
                    p.append(f"stderr lacks {s!r}")
            return p

        return self.run(name, args, expect, **kw)

    def success(self, name, args, out=(), err_lines=(), **kw):
        """A case that must work: exit 0, stdout holding `out`, and on stderr only lines
        matching one of the regular expressions `err_lines` (warnings, --stats)."""

        def expect(res):
            p = []
            if res.rc != 0:
                p.append(f"exit status {res.rc}, expected 0")
            for s in out:
                if s not in res.out:
                    p.append(f"stdout lacks {s!r}")
            for line in res.err.splitlines():
                if not any(re.search(r, line) for r in err_lines):
                    p.append(f"unexpected stderr line {line!r}")
            for r in err_lines:
                if not any(re.search(r, line) for line in res.err.splitlines()):
                    p.append(f"stderr lacks a line matching {r!r}")
            return p

        return self.run(name, args, expect, **kw)

    def unchanged(self, name, path, digest):
        self.check(name, os.path.exists(path) and sha256(path) == digest,
                   f"{path} changed (sha256 differs) or is gone")

    def good_run_intact(self, when):
        digests = self.manifest["sha256"]
        for f, digest in digests.items():
            p = os.path.join(self.good, f)
            self.check(f"good_run_{f}_unchanged_{when}", os.path.exists(p) and sha256(p) == digest,
                       f"the good run's {f} is not byte-identical to the one trained at setup")
        stray = [f for f in os.listdir(self.good)
                 if f not in digests and f != ".moe.lock"]
        self.check(f"good_run_no_new_files_{when}", not stray, f"new files in the good run: {stray}")

    def run_class(self, cls):
        self.cls = cls
        self.work = os.path.join(self.dir, "work", cls)
        if os.path.isdir(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        self.good_run_intact("before")
        getattr(self, "class_" + cls.split("_", 1)[1])()
        self.good_run_intact("after")

    # --- train helpers -----------------------------------------------------------------
    def train(self, *extra):
        """`moe train GOOD_CONFIG EXTRA...`"""
        return ["train", self.cfg, *extra]

    def out_dir(self, name):
        return f"out_dir={self.W(name)}"

    # ===================================================================================
    # (1) JSON nested 100,000 levels: in a safetensors header (moe info, moe eval), in a
    # config file (moe train), in a --set value, and in checkpoint metadata values.
    def class_deep_json(self):
        deep = "nested deeper than 32 levels"
        for field in ("metadata", "dtype", "shape", "data_offsets"):
            f = self.C(f"deep_in_{field}.safetensors")
            self.error(f"info_deep_in_{field}", ["info", f], [f + ": header: JSON", deep])
        f = self.C("deep_header.safetensors")
        self.error("info_deep_header", ["info", f], [f, deep])
        f = self.C("deep_in_shape.safetensors")
        self.error("eval_deep_in_shape", ["eval", f], [f, deep])
        run = self.C("deep_header_run")
        self.error("eval_run_dir_deep_header", ["eval", run],
                   [os.path.join(run, "checkpoint.safetensors"), deep])
        f = self.C("deep_config.json")
        self.error("train_deep_config", ["train", f], [f, deep])
        f = self.C("deep_section_config.json")
        self.error("train_deep_object_config", ["train", f], [f, deep])
        # A command-line argument is at most 128 KiB (MAX_ARG_STRLEN): 60,000 levels.
        self.error("train_set_deep_value",
                   self.train("--set", "model.d_model=" + "[" * 60_000 + "]" * 60_000,
                              "--set", self.out_dir("never")),
                   ["--set model.d_model", deep])
        self.error("train_set_deep_unclosed",
                   self.train("--set", "train.steps=" + "[" * 100_000, "--set", self.out_dir("never")),
                   ["--set train.steps", deep])
        self.error("train_set_deep_object",
                   self.train("--set", "train=" + '{"a":' * 15_000 + "1" + "}" * 15_000,
                              "--set", self.out_dir("never")),
                   ["--set train", deep])
        for key in ("config", "domains"):
            f = self.C(f"deep_meta_{key}.safetensors")
            self.error(f"eval_deep_metadata_{key}", ["eval", f], [f, deep])
        f = self.C("deep_meta_tokenizer.safetensors")
        self.error("eval_deep_metadata_tokenizer", ["eval", f], ["tokenizer", deep])
        self.error("generate_deep_metadata_tokenizer", ["generate", f], ["tokenizer", deep])
        # The error should also say which checkpoint holds the bad tokenizer.
        self.error("eval_deep_metadata_tokenizer_names_file", ["eval", f], [f, "tokenizer", deep])

    # (2) Not a regular file: FIFOs (open() would block forever), /dev/zero, /dev/urandom
    # (read until memory runs out), a directory.
    def class_not_regular_file(self):
        fifo = "must be a regular file, but this is a FIFO"
        chardev = "must be a regular file, but this is a character device"
        f = self.C("fifo.safetensors")
        self.error("info_fifo", ["info", f], [f, fifo])
        self.error("eval_fifo_file", ["eval", f], [f, fifo])
        run = self.C("fifo_run")
        self.error("eval_run_dir_fifo_checkpoint", ["eval", run],
                   [os.path.join(run, "checkpoint.safetensors"), fifo])
        self.error("generate_run_dir_fifo_checkpoint", ["generate", run], ["checkpoint.safetensors", fifo])
        self.error("inspect_run_dir_fifo_checkpoint", ["inspect", run, "--out", self.W("ins")],
                   ["checkpoint.safetensors", fifo])
        for dev in ("/dev/zero", "/dev/urandom"):
            name = dev.rsplit("/", 1)[1]
            self.error(f"train_config_{name}", ["train", dev], [dev, "config file", chardev])
            self.error(f"info_{name}", ["info", dev], [dev, chardev])
            self.error(f"train_data_path_{name}",
                       self.train("--set", f"data.path={dev}", "--set", self.out_dir("never")),
                       [dev, "data file", chardev])
            self.error(f"eval_data_{name}", ["eval", self.good, "--data", dev], [dev, chardev])
        f = self.C("fifo_config.json")
        self.error("train_config_fifo", ["train", f], [f, "config file", fifo])
        f = self.C("fifo_data.txt")
        self.error("train_data_path_fifo",
                   self.train("--set", f"data.path={f}", "--set", self.out_dir("never")),
                   [f, "data file", fifo])
        self.error("train_data_path_fifo_in_list",
                   self.train("--set", f"data.path={self.manifest['corpus']}:{f}",
                              "--set", self.out_dir("never")), [f, fifo])
        self.error("info_directory", ["info", self.good], [self.good, "this is a directory"])
        # In a data directory, only regular files are domains: a FIFO there is passed over.
        self.success("train_data_dir_holding_fifo",
                     self.train("--set", f"data.path={self.C('fifo_in_data_dir')}",
                                "--set", self.out_dir("fifo_dir_run")), out=["checkpoint:"])

    # (3) Memory: sizes from metadata, flags and configs are checked before allocation.
    def class_memory(self):
        avail = "available"
        mismatch = "but the config in its metadata makes it"
        out = {"eval": [], "generate": [], "inspect": ["--out", self.W("i")]}
        f = self.C("d_model_4096.safetensors")
        for cmd in ("eval", "generate", "inspect"):
            self.error(f"{cmd}_metadata_d_model_4096", [cmd, f, *out[cmd]],
                       [f, "tensor 'tok_emb'", "[300, 4096]", mismatch])
        f = self.C("n_experts_1e6.safetensors")
        for cmd in ("eval", "generate", "inspect"):
            self.error(f"{cmd}_metadata_n_experts_1e6", [cmd, f, *out[cmd]],
                       [f, "tensor 'layers.0.moe.experts.w1'", "[1000000, 16, 16]", mismatch])
        f = self.C("n_layers_1e9.safetensors")
        self.error("eval_metadata_n_layers_1e9", ["eval", f], [f, "layers.1.attn.wq", "does not hold"])
        # seq_len appears in no tensor: only the memory check stands before the allocation.
        f = self.C("seq_len_1e12.safetensors")
        for cmd in ("eval", "generate"):
            self.error(f"{cmd}_metadata_seq_len_1e12", [cmd, f],
                       ["model (", "x 1000000000000", "needs more than 16 EiB", avail])
        self.error("eval_metadata_seq_len_1e12_names_file", ["eval", f], [f, "needs", avail])
        for key, value in (("model.n_layers", "1000000000"), ("model.vocab_size", "1000000000000"),
                           ("model.d_model", "1000000"), ("model.seq_len", "1000000000000"),
                           ("train.batch_size", "100000000")):
            self.error(f"train_set_{key}_{value}",
                       self.train("--set", f"{key}={value}", "--set", self.out_dir("never")),
                       ["model (", "needs", avail])
        self.error("train_set_n_experts_1e9_moe",
                   self.train("--set", "model.ffn=moe", "--set", "moe.n_experts=1000000000",
                              "--set", self.out_dir("never")),
                   ["model (", "parameters", "needs", avail])
        for cmd in ("eval", "inspect"):
            self.error(f"{cmd}_batch_1e8", [cmd, self.good, "--batch", "100000000", *out[cmd]],
                       ["model (", "batch 100000000 x 16", "needs", avail])
        self.error("eval_batch_int64_max", ["eval", self.good, "--batch", "9223372036854775807"],
                   ["model (", "needs more than 16 EiB", avail])
        # A limit that the tiny model's activations for batch 200000 (about 11 GiB) exceed.
        self.error("train_batch_over_MOE_MEMORY_LIMIT",
                   self.train("--set", "train.batch_size=200000", "--set", self.out_dir("never")),
                   ["model (", "needs", "; 1.0 GiB available"], env={"MOE_MEMORY_LIMIT": "1G"})
        # The sparse 8 GB data file (never written): refused before a byte is read.
        sparse = self.C("sparse", "huge.txt")
        for name, path in (("file", sparse), ("dir", self.C("sparse"))):
            self.error(f"train_sparse_8GB_data_{name}",
                       self.train("--set", f"data.path={path}", "--set", self.out_dir("never")),
                       ["(data.path): 7.5 GiB of text in 1 file", "needs", "; 1.0 GiB available"],
                       env={"MOE_MEMORY_LIMIT": "1G"}, max_rss=256 * MiB)
        self.error("eval_sparse_8GB_data", ["eval", self.good, "--data", sparse],
                   ["(data.path): 7.5 GiB of text", "needs", "; 1.0 GiB available"],
                   env={"MOE_MEMORY_LIMIT": "1G"}, max_rss=256 * MiB)
        self.error("train_sparse_8GB_data_names_file",
                   self.train("--set", f"data.path={sparse}", "--set", self.out_dir("never")),
                   [sparse, "needs", "available"], env={"MOE_MEMORY_LIMIT": "1G"})

    # (4) NaN / Inf weights: refused naming the tensor, by eval, generate, inspect and
    # train --resume (which must leave the file as it was).
    def class_non_finite(self):
        tail = "non-finite weights cannot be used"
        for kind, value in (("nan", "holds nan"), ("inf", "holds inf")):
            f = self.C(f"{kind}.safetensors")
            for cmd in ("eval", "generate", "inspect"):
                extra = ["--out", self.W("i")] if cmd == "inspect" else []
                self.error(f"{cmd}_{kind}", [cmd, f, *extra],
                           [f, "tensor 'layers.0.attn.wq'", value, tail])
            run = self.copy_run(f"{kind}_run", f)
            ckpt = os.path.join(run, "checkpoint.safetensors")
            digest = sha256(ckpt)
            self.error(f"train_resume_from_{kind}",
                       self.train("--set", f"out_dir={run}", "--resume"),
                       [ckpt, "tensor 'layers.0.attn.wq'", value, tail])
            self.unchanged(f"train_resume_from_{kind}_leaves_checkpoint", ckpt, digest)
            left = [n for n in os.listdir(run) if ".tmp." in n]
            self.check(f"train_resume_from_{kind}_no_tmp_files", not left, f"left behind: {left}")
        f = self.C("neg_inf_emb.safetensors")
        self.error("eval_neg_inf_embedding", ["eval", f], [f, "tensor 'tok_emb'", "holds -inf"])

    # (5) Dotted keys: a top-level "train.steps" was accepted and ignored; --set keys with
    # empty parts.
    def class_dotted_keys(self):
        f = self.C("dotted_top.json")
        self.error("train_config_top_level_dotted_key", ["train", f],
                   [f, "key 'train.steps'", "contains '.'"])
        f = self.C("dotted_nested.json")
        self.error("train_config_nested_dotted_key", ["train", f],
                   [f, "key 'lr.max'", "section 'train'", "contains '.'"])
        for key in (".train.steps", "train..steps", "train.steps.", "."):
            self.error(f"train_set_{key}", self.train("--set", f"{key}=7", "--set", self.out_dir("never")),
                       [f"--set {key}=7", f"'{key}' is not a key"])
        self.error("train_set_object_with_dotted_key",
                   self.train("--set", 'train={"a.b": 1}', "--set", self.out_dir("never")),
                   ["--set train", "key 'a.b'", "contains '.'"])

    # (6) Integers parsed strictly: the step in checkpoint metadata (eval and train
    # --resume), flags; --max-tokens at INT64_MAX works and stops at the context; --threads
    # far above the core count is clamped with a warning.
    def class_strict_numbers(self):
        steps = (("abc", "'abc'"), ("20digits", "99999999999999999999"), ("12abc", "'12abc'"),
                 ("neg5", "-5"), ("space7", "' 7'"), ("empty", "''"))
        for name, shown in steps:
            f = self.C(f"step_{name}.safetensors")
            self.error(f"eval_step_{name}", ["eval", f], [f, "metadata 'step'", shown])
        for name, shown in steps[:4]:
            run = self.copy_run(f"step_{name}", self.C(f"step_{name}.safetensors"))
            ckpt = os.path.join(run, "checkpoint.safetensors")
            digest = sha256(ckpt)
            self.error(f"train_resume_step_{name}",
                       self.train("--set", f"out_dir={run}", "--resume", "--set", "train.steps=7"),
                       [ckpt, "metadata 'step'", shown])
            self.unchanged(f"train_resume_step_{name}_leaves_checkpoint", ckpt, digest)
        ctx = self.manifest["seq_len"]
        # Empty prompt = one '\n' token, so seq_len - 1 new tokens fill the context.
        self.success("generate_max_tokens_int64_max",
                     ["generate", self.good, "--max-tokens", "9223372036854775807", "--stats"],
                     err_lines=[rf"^generated {ctx - 1} tokens in .*context {ctx}\)$"])
        usage = dict(rc=2)
        for flag, value, shown in (("--max-tokens", "99999999999999999999", "out of range"),
                                   ("--max-tokens", "-1", ">= 0"),
                                   ("--max-tokens", "12abc", "'12abc'"),
                                   ("--seed", "abc", "'abc'"),
                                   ("--top-k", "1e3", "'1e3'"),
                                   ("--temperature", "nan", "finite")):
            self.error(f"generate_{flag[2:]}_{value}", ["generate", self.good, flag, value],
                       [flag, shown], **usage)
        for flag, value, shown in (("--batch", "12abc", "'12abc'"), ("--windows", " 7", "' 7'"),
                                   ("--threads", "-1", "out of range"),
                                   ("--threads", "99999999999999999999", "out of range")):
            self.error(f"eval_{flag[2:]}_{value.strip()}", ["eval", self.good, flag, value],
                       [flag, shown], **usage)
        warn = r"^warning: 99999999999 threads asked for, this machine has \d+ cores; using \d+$"
        self.success("eval_threads_clamped", ["eval", self.good, "--threads", "99999999999"],
                     out=["all"], err_lines=[warn])
        self.success("generate_threads_clamped",
                     ["generate", self.good, "--threads", "99999999999", "--max-tokens", "3"],
                     err_lines=[warn])
        self.success("train_threads_clamped",
                     self.train("--threads", "99999999999", "--set", self.out_dir("threads")),
                     out=["checkpoint:"], err_lines=[warn])
        self.error("train_set_step_count_float", self.train("--set", "train.steps=5.5",
                                                            "--set", self.out_dir("never")),
                   ["train.steps", "must be an integer"])
        self.error("train_set_d_model_20_digits",
                   self.train("--set", "model.d_model=99999999999999999999", "--set", self.out_dir("never")),
                   ["model.d_model", "must be an integer"])
        self.error("train_set_lr_overflow",
                   self.train("--set", "train.lr=1e999", "--set", self.out_dir("never")),
                   ["train.lr", "1e999"])

    # (7) A data file whose name is not UTF-8: trains, saves (the name escaped), evaluates.
    def class_non_utf8_names(self):
        data = self.C("non_utf8_data")
        run = self.W("run")
        shown = "b\\xff\\xfeta-\\xc3(.txt"
        self.success("train_non_utf8_file_name",
                     self.train("--set", f"data.path={data}", "--set", f"out_dir={run}"),
                     out=["checkpoint:"])
        ckpt = os.path.join(run, "checkpoint.safetensors")
        if not self.check("checkpoint_written", os.path.isfile(ckpt), f"no {ckpt}"):
            return
        domains = json.loads(metadata(ckpt).get("domains", "[]"))
        self.check("checkpoint_domains_escaped", shown in domains,
                   f"domains in the metadata are {domains!r}, expected {shown!r} among them")
        self.success("eval_non_utf8_run", ["eval", run], out=[shown])
        res = self.success("eval_non_utf8_run_json", ["eval", run, "--json"], out=['"domains"'])
        if res and res.rc == 0:
            try:
                j = json.loads(res.out)
                names = [d["domain"] for d in j["domains"]]
                self.check("eval_json_parses", shown in names, f"domains {names!r}")
            except ValueError as e:
                self.check("eval_json_parses", False, f"--json output is not JSON: {e}")
        self.success("info_non_utf8_run", ["info", ckpt], out=["metadata domains"])
        self.success("inspect_non_utf8_run", ["inspect", run, "--out", self.W("ins")], out=[shown])
        self.success("generate_non_utf8_run", ["generate", run, "--max-tokens", "3"])
        self.success("train_resume_non_utf8_run",
                     self.train("--set", f"data.path={data}", "--set", f"out_dir={run}", "--resume",
                                "--set", "train.steps=7"), out=["resumed from", "(step 7)"])
        bad_dir = os.fsdecode(os.path.join(os.fsencode(self.cases), b"dir_\xff"))
        self.error("train_set_non_utf8_path",
                   self.train("--set", f"data.path={bad_dir}", "--set", self.out_dir("never")),
                   ["--set data.path=", "not valid UTF-8"])  # the value is shortened to 40 bytes

    # (8) The run directory: a second `moe train` without --resume is refused and leaves
    # the checkpoint as it was; two runs at once on one out_dir: the second is refused
    # naming the first's pid.
    def class_run_dir(self):
        held = "already holds a checkpoint"
        # The good run itself (its sha256 is checked after this class, as after every class).
        self.error("train_again_without_resume_on_good_run", ["train", self.cfg],
                   [self.good, held, "--resume", "--overwrite"])
        run = self.copy_run("copy")
        ckpt = os.path.join(run, "checkpoint.safetensors")
        digests = {n: sha256(os.path.join(run, n)) for n in ("checkpoint.safetensors", "metrics.jsonl")}
        self.error("train_again_without_resume", self.train("--set", f"out_dir={run}"), [run, held])
        self.error("train_again_other_steps", self.train("--set", f"out_dir={run}", "--set",
                                                         "train.steps=2"), [run, held])
        for n, d in digests.items():
            self.unchanged(f"refused_rerun_leaves_{n}", os.path.join(run, n), d)
        self.error("train_resume_and_overwrite", self.train("--set", f"out_dir={run}", "--resume",
                                                            "--overwrite"),
                   ["--resume and --overwrite exclude each other"], rc=2)
        self.error("train_resume_without_checkpoint",
                   self.train("--set", self.out_dir("empty"), "--resume"),
                   [self.W("empty", "checkpoint.safetensors"), "no checkpoint to resume from"])

        # Two runs at once.
        cc = self.W("concurrent")
        lock = os.path.join(cc, ".moe.lock")
        first = Child(self, self.train("--set", f"out_dir={cc}", "--set", "train.steps=100000000",
                                       "--set", "train.log_every=1000000"),
                      log=self.W("concurrent_first"))
        try:
            deadline = time.monotonic() + 30 * self.scale
            holder = ""
            while time.monotonic() < deadline and f"pid {first.pid}," not in holder:
                time.sleep(0.02)
                try:
                    with open(lock) as f:
                        holder = f.read()
                except FileNotFoundError:
                    pass
            if not self.check("first_run_holds_lock", f"pid {first.pid}," in holder,
                              f"{lock} did not name pid {first.pid} within the limit: {holder!r}"):
                return
            in_use = [cc, f"in use by another run (pid {first.pid}, started"]
            self.error("second_run_refused", self.train("--set", f"out_dir={cc}"), in_use)
            self.error("second_run_overwrite_refused",
                       self.train("--set", f"out_dir={cc}", "--overwrite"), in_use)
            self.error("second_run_resume_refused",
                       self.train("--set", f"out_dir={cc}", "--resume"), in_use)
            self.check("first_run_still_running", first.alive(), "the first run ended")
            first.signal(signal.SIGINT)
            res = first.wait(60 * self.scale)
        finally:
            try:
                first.signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        m = re.search(r"stopped early at step (\d+)", res.out)
        if not self.check("first_run_stops_on_sigint", res.rc == 130 and m and not res.timed_out,
                          f"exit {res.rc}, stdout {res.out[-500:]!r}, stderr {res.err[-500:]!r}"):
            return
        self.check("first_run_saved", os.path.isfile(os.path.join(cc, "checkpoint.safetensors")),
                   "no checkpoint after SIGINT")
        # The lock goes with the process: a resume right after works.
        self.success("resume_after_first_run_ended",
                     self.train("--set", f"out_dir={cc}", "--resume",
                                "--set", f"train.steps={int(m.group(1)) + 1}"),
                     out=[f"resumed from {cc}/checkpoint.safetensors at step {m.group(1)}"])

    # (9) data.val_fraction that leaves no validation record.
    def class_val_fraction(self):
        corpus = self.manifest["corpus"]
        self.error("train_val_fraction_1e-20",
                   self.train("--set", "data.val_fraction=1e-20", "--set", self.out_dir("never")),
                   [corpus, "data.val_fraction = 1e-20", "no record into validation"])
        self.error("train_val_fraction_1e-300",
                   self.train("--set", "data.val_fraction=1e-300", "--set", self.out_dir("never")),
                   ["data.val_fraction", "no record into validation"])
        few = self.C("few_records")
        self.error("train_val_fraction_0.2_three_records",
                   self.train("--set", f"data.path={few}", "--set", "data.val_fraction=0.2",
                              "--set", self.out_dir("never")),
                   [few, "data.val_fraction = 0.2", "no record into validation"])
        for v in ("0", "-0.1", "0.7"):
            self.error(f"train_val_fraction_{v}",
                       self.train("--set", f"data.val_fraction={v}", "--set", self.out_dir("never")),
                       ["data.val_fraction must be in (0, 0.5]"])
        self.error("train_val_fraction_string",
                   self.train("--set", "data.val_fraction=abc", "--set", self.out_dir("never")),
                   ["data.val_fraction", "must be a number"])
        self.error("eval_data_without_validation_record",
                   ["eval", self.good, "--data", few], [few, "no record into validation"])

    # (10) A header of 200,000 empty tensors: read in bounded time.
    def class_many_tensors(self):
        # At f623e06 these hung: parse_header's callback parser (nlohmann 3.11.2) scans the
        # whole parent object at every end_object, O(n^2): 20,000 tensors took 16 s,
        # 200,000 hours. io::top_level_keys reads the order in one linear scan instead.
        f = self.C("many_tensors.safetensors")
        self.success("info_200000_tensors", ["info", f], out=["200000 tensors, 0 values"],
                     limit=15)
        f = self.C("many_tensors_dup.safetensors")
        self.error("info_200000_tensors_one_twice", ["info", f], [f, "key 't0' appears twice"],
                   limit=15)
        run = self.W("run")
        os.makedirs(run)
        shutil.copy(self.C("many_tensors.safetensors"), os.path.join(run, "checkpoint.safetensors"))
        self.error("eval_200000_tensors", ["eval", run],
                   [os.path.join(run, "checkpoint.safetensors"), "format 'many'",
                    "not a language-model checkpoint"],
                   limit=15)
        # A smaller header is listed in full.
        f = self.C("many_tensors_2000.safetensors")
        self.success("info_2000_tensors", ["info", f], out=["2000 tensors, 0 values"], limit=5)
        self.error("info_header_length_2^64-1", ["info", self.C("header_len_huge.safetensors")],
                   ["header_len_huge.safetensors", "header length 18446744073709551615"])

    # (11) Stale temporary files of an interrupted save are removed when a run starts
    # (--resume or --overwrite), never before a refusal; no error shows our internals.
    def class_stale_tmp_and_internals(self):
        def stale(run):
            names = ["checkpoint.safetensors.tmp.123.0", "checkpoint.safetensors.tmp.999999.7"]
            for n in names:
                with open(os.path.join(run, n), "wb") as f:
                    f.write(b"\0" * 1000)
            for n in ("checkpoint.safetensors.tmpx", "notes.txt"):  # not ours: kept
                with open(os.path.join(run, n), "w") as f:
                    f.write("keep\n")
            return names

        for mode in ("--resume", "--overwrite"):
            run = self.copy_run(f"stale{mode}")
            names = stale(run)
            self.success(f"train{mode}_removes_stale_tmp", self.train("--set", f"out_dir={run}", mode),
                         out=[f"{run}: removed 2 temporary files left by an interrupted save",
                              "checkpoint:"])
            left = sorted(os.listdir(run))
            self.check(f"train{mode}_stale_tmp_gone", not any(n in left for n in names), f"left: {left}")
            self.check(f"train{mode}_other_files_kept",
                       "checkpoint.safetensors.tmpx" in left and "notes.txt" in left, f"left: {left}")
        # A refused fresh start removes nothing.
        run = self.copy_run("stale_refused")
        names = stale(run)
        self.error("train_fresh_refused_keeps_tmp", self.train("--set", f"out_dir={run}"),
                   [run, "already holds a checkpoint"])
        left = os.listdir(run)
        self.check("train_fresh_refused_keeps_tmp_files", all(n in left for n in names), f"left: {left}")
        # A fresh start in an out_dir holding only a stale temporary file.
        run = self.W("only_tmp")
        os.makedirs(run)
        with open(os.path.join(run, "checkpoint.safetensors.tmp.7.1"), "wb") as f:
            f.write(b"partial")
        self.success("train_fresh_removes_stale_tmp", self.train("--set", f"out_dir={run}"),
                     out=["removed 1 temporary file left by an interrupted save", "checkpoint:"])
        # Odd values that once reached internal checks (arena.cpp, [p != nullptr]): every
        # error case of every class also asserts no "src/" or ".cpp:" on stderr.
        g = self.good
        for name, args, contains, rc in (
                ("generate_top_k_negative", ["generate", g, "--top-k", "-5"], ["top_k"], 1),
                ("generate_top_p_0", ["generate", g, "--top-p", "0"], ["top_p"], 1),
                ("generate_top_p_huge", ["generate", g, "--top-p", "1e300"], ["top_p"], 1),
                ("generate_temperature_negative", ["generate", g, "--temperature", "-1"],
                 ["temperature"], 1),
                ("generate_prompt_over_context", ["generate", g, "--prompt", "x" * 200],
                 ["the prompt has", "context is 16"], 2),
                ("inspect_layer_7", ["inspect", g, "--layer", "7", "--out", self.W("i")],
                 ["--layer 7 is not an MoE layer"], 2),
                ("eval_missing_file", ["eval", self.W("nothing")], [self.W("nothing")], 1),
                ("eval_metrics_jsonl", ["eval", os.path.join(g, "metrics.jsonl")],
                 ["metrics.jsonl", "not a valid safetensors file"], 1),
                ("eval_not_lm_checkpoint", ["eval", self.C("no_format.safetensors")],
                 ["no_format.safetensors", "not a moe.cpp language-model checkpoint"], 1),
                ("train_out_dir_is_file",
                 self.train("--set", f"out_dir={os.path.join(g, 'metrics.jsonl')}"),
                 ["metrics.jsonl", "out_dir"], 1),
                ("train_n_heads_3", self.train("--set", "model.n_heads=3", "--set", self.out_dir("never")),
                 ["model.n_heads"], 1),
                ("train_d_model_negative",
                 self.train("--set", "model.d_model=-16", "--set", self.out_dir("never")),
                 ["model.d_model"], 1),
                ("train_top_k_over_experts",
                 self.train("--set", "moe.top_k=9", "--set", self.out_dir("never")), ["moe.top_k"], 1),
                ("train_vocab_int64_max",
                 self.train("--set", "model.vocab_size=9223372036854775807", "--set", self.out_dir("never")),
                 ["model (", "needs more than 16 EiB"], 1),
        ):
            self.error(name, args, contains, rc=rc)
        self.success("eval_windows_int64_max", ["eval", g, "--windows", "9223372036854775807"],
                     out=["all"])

    # (12) Image classifiers: IDX files that lie about their size or are not IDX, a label
    # out of range, a gzip stream that is not one; a PNG folder with a corrupt image; images
    # that are not PNGs, or a FIFO, given to `moe classify`; a language model given to it;
    # a vision checkpoint whose config does not match its tensors.
    def class_vision(self):
        m = self.manifest
        idx_cfg = self.C("vision_idx_config.json")
        for name, file, shown in (
                ("idx_truncated", "train-images-idx3-ubyte", "truncated IDX file"),
                ("idx_magic", "train-images-idx3-ubyte", "not an IDX file"),
                ("idx_label_range", "train-labels-idx1-ubyte", "label 9 is 12"),
                ("idx_count_mismatch", "train-images-idx3-ubyte", "holds 9"),
                ("idx_gzip_corrupt", "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz")):
            self.error(f"train_{name}", ["train", idx_cfg, "--set", f"data.path={self.C(name)}"],
                       [os.path.join(self.C(name), file), shown])
        self.check("idx_cases_never_ran", not os.path.exists(self.C("never_run")),
                   "a failed vision run left its out_dir behind")
        self.error("train_png_folder_with_corrupt_image",
                   ["train", m["vision_config"], "--set", f"data.path={self.C('pngs_corrupt')}",
                    "--set", self.out_dir("never")],
                   [os.path.join(self.C("pngs_corrupt"), "right", "5.png"), "PNG"])
        run = m["vision_run"]
        for name in ("not_png.png", "truncated.png", "fifo.png"):
            self.error(f"classify_{name}", ["classify", run, self.C(name)], [self.C(name)])
        self.error("classify_missing_image", ["classify", run, self.W("nowhere.png")],
                   [self.W("nowhere.png")])
        self.error("classify_language_model", ["classify", self.good, m["vision_png"]],
                   [os.path.join(self.good, "checkpoint.safetensors"), "is not a vision checkpoint"])
        f = self.C("vision_d_model_4096.safetensors")
        self.error("eval_vision_d_model_4096", ["eval", f, "--split", "val"], [f, "the config in its metadata makes it"])
        self.error("classify_vision_d_model_4096", ["classify", f, m["vision_png"]], [f])
        self.success("classify_good_image", ["classify", run, m["vision_png"]], out=["left"])
        self.error("classify_bad_top", ["classify", run, m["vision_png"], "--top", "0"],
                   ["--top"], rc=2)
        ckpt = os.path.join(run, "checkpoint.safetensors")
        self.check("vision_run_unchanged", sha256(ckpt) == m["vision_sha256"],
                   f"{ckpt} changed (sha256 differs)")


    # (13) Multi-task models on CSV files: a training file that breaks the CSV rules or the
    # schema (every error names the file and, where there is one, the line), a record of
    # 17 MiB, a FIFO or a directory where a CSV file is expected; checkpoints whose metadata
    # does not match their tensors; scoring with a language model.
    def class_multitask(self):
        m = self.manifest
        cfg, run = m["multitask_config"], m["multitask_run"]
        lines = {"csv_unterminated_quote.csv": ":3:", "csv_text_after_quote.csv": ":3:",
                 "csv_field_count.csv": ":3", "csv_not_a_number.csv": ":3",
                 "csv_target_not_binary.csv": ":3", "csv_target_missing.csv": ":3",
                 "csv_missing_column.csv": "\"y\"", "csv_not_utf8.csv": ":3",
                 "csv_huge_record.csv": ":2", "csv_empty.csv": "empty",
                 "csv_fifo.csv": "FIFO", "csv_directory.csv": "directory"}
        for name in m["multitask_bad_csv"]:
            self.error(f"train_{name}", ["train", cfg, "--set", f"data.train={self.C(name)}",
                                         "--set", self.out_dir("never")],
                       [self.C(name), lines[name]], max_rss=256 * MiB)
            # Scoring reads only the features: a target or a non-UTF-8 category (an unseen
            # value, scored through the out-of-vocabulary row) is no error there.
            if name not in ("csv_target_not_binary.csv", "csv_target_missing.csv",
                            "csv_missing_column.csv", "csv_not_utf8.csv"):
                self.error(f"score_{name}", ["score", run, self.C(name)], [self.C(name)],
                           max_rss=256 * MiB)
        self.check("multitask_never_ran", not os.path.exists(self.W("never")),
                   "a failed multi-task run left its out_dir behind")
        for name, shown in (("multitask_d_model_4096", "the config in its metadata makes it"),
                            ("multitask_experts_1e6", "the config in its metadata makes it"),
                            ("multitask_long_vocab", "embed.0.weight"),
                            ("multitask_encoding_not_json", "encoding")):
            f = self.C(name + ".safetensors")
            self.error(f"eval_{name}", ["eval", f, "--split", "val"], [f, shown])
            self.error(f"score_{name}", ["score", f, os.path.join(os.path.dirname(cfg), "val.csv")],
                       [f, shown])
        self.error("score_language_model", ["score", self.good, os.path.join(os.path.dirname(cfg), "val.csv")],
                   [os.path.join(self.good, "checkpoint.safetensors"), "not a multi-task checkpoint"])
        self.success("score_good_rows", ["score", run, os.path.join(os.path.dirname(cfg), "val.csv")],
                     out=["line,y"])
        ckpt = os.path.join(run, "checkpoint.safetensors")
        self.check("multitask_run_unchanged", sha256(ckpt) == m["multitask_sha256"],
                   f"{ckpt} changed (sha256 differs)")


def _quote(a):
    a = str(a)
    if len(a) > 120:
        a = a[:60] + f"...<{len(a)} chars>..." + a[-20:]
    return a if re.fullmatch(r"[\w./=:,+-]+", a) else repr(a)


def _indent(text):
    return text.rstrip("\n").replace("\n", "\n              ") or "(empty)"


def _safe(name):
    return re.sub(r"[^\w.-]", "_", name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moe", required=True, help="the moe binary")
    ap.add_argument("--dir", required=True, help="what make_cases.py wrote")
    ap.add_argument("--class", dest="cls", required=True,
                    help="one of " + ", ".join(CLASSES) + ", its number, or 'all'")
    ap.add_argument("--sanitized", action="store_true", help="ASan/UBSan build: 4x time and memory")
    ap.add_argument("--include-defects", action="store_true",
                    help="also run the cases of known defects (expected to fail until fixed)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's stderr")
    args = ap.parse_args()
    if args.cls == "all":
        chosen = CLASSES
    else:
        chosen = [c for c in CLASSES if args.cls in (c, c.split("_", 1)[0], c.split("_", 1)[1])]
        if not chosen:
            ap.error(f"unknown class {args.cls!r}")
    t = Suite(args)
    start = time.monotonic()
    for cls in chosen:
        t.run_class(cls)
    print(f"\n{t.passed} passed, {len(t.failures)} failed, {len(t.skipped)} skipped (known "
          f"defects) in {time.monotonic() - start:.1f} s")
    for s in t.skipped:
        print(f"  skipped {s}")
    for f in t.failures:
        print(f"  FAILED {f}")
    sys.exit(1 if t.failures else 0)


if __name__ == "__main__":
    main()
