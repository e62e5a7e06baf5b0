#!/usr/bin/env python3
"""Writes the hostile inputs of the bad-input suite (tests/bad_input/run_cases.py).

    make_cases.py --moe build/moe --out build/bad_input

Wipes OUT, then writes into it:
  corpus/            three small text files (60 paragraphs), the tiny run's training text
  good/config.json   the tiny run's config (a 4-expert MoE, BPE vocabulary 300, 5 steps)
  good/run/          the tiny run, trained once here with the real `moe train` (~2 s)
  cases/             every hostile file: deeply nested JSON (configs, safetensors headers),
                     FIFOs, a sparse 8 GB data file, copies of the good checkpoint with
                     tampered metadata or a NaN / Inf weight, a header of 200,000 tensors,
                     a data directory holding a file name that is not UTF-8, ...
  vision/            a tiny image classifier (two classes of 8x8 PNGs) trained the same way,
                     for the image cases (IDX files that lie, PNGs that are not, a tampered
                     vision checkpoint, a FIFO where an image is expected)
  multitask/         a tiny multi-task model (two CSV files) trained the same way, for the
                     CSV cases (files that break the rules, a 17 MiB record, a FIFO) and
                     tampered multi-task checkpoints
  manifest.json      the good checkpoint's sha256 and step, for the runner to check

Only the Python standard library is used (safetensors files are read and written by hand:
8-byte little-endian header length, JSON header, data), so the suite runs with any python3.
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib

DEEP = 100_000  # nesting levels of the "stack-overflow" JSON inputs (200 KB of brackets)
SPARSE_BYTES = 8 * 1000**3  # the sparse data file: 8 GB, never written (truncate only)
MANY_TENSORS = 200_000  # empty tensors in one header (took 31 s to parse before the fix)


def deep_json(levels=DEEP):
    return "[" * levels + "]" * levels


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- safetensors by hand ---------------------------------------------------------------


def read_safetensors(path):
    """(header dict with '__metadata__', data bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    return header, blob[8 + n :]


def write_raw(path, header_text, data=b""):
    """A safetensors file whose header is `header_text` verbatim (padded to 8 bytes)."""
    raw = header_text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(data)


def write_safetensors(path, header, data):
    write_raw(path, json.dumps(header, separators=(",", ":")), data)


def with_metadata(header, **changes):
    h = json.loads(json.dumps(header))
    h["__metadata__"].update(changes)
    return h


def with_config(header, section, key, value):
    h = json.loads(json.dumps(header))
    cfg = json.loads(h["__metadata__"]["config"])
    cfg[section][key] = value
    h["__metadata__"]["config"] = json.dumps(cfg)
    return h


def with_value(header, data, tensor, value):
    """`data` with element 0 of F32 tensor `tensor` set to `value` (NaN, Inf)."""
    info = header[tensor]
    assert info["dtype"] == "F32", info
    begin = info["data_offsets"][0]
    out = bytearray(data)
    out[begin : begin + 4] = struct.pack("<f", value)
    return bytes(out)


# --- the tiny run ------------------------------------------------------------------------

WORDS = {
    "alpha.txt": "river stone mountain valley forest rain cloud wind snow meadow hill lake "
    "tree leaf root branch bird nest spring summer winter autumn".split(),
    "beta.txt": "engine wheel gear lever piston valve steam boiler rail track signal "
    "station copper iron bolt spring cable pulley crank shaft".split(),
    "gamma.txt": "bread butter cheese apple pear honey salt pepper soup kettle oven "
    "table spoon plate cup knife garden onion garlic herb".split(),
}


def write_corpus(directory, paragraphs=20):
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(7)
    for name, words in WORDS.items():
        paras = []
        for _ in range(paragraphs):
            sentences = []
            for _ in range(rng.randint(2, 4)):
                s = " ".join(rng.choice(words) for _ in range(rng.randint(5, 10)))
                sentences.append(s.capitalize() + ".")
            paras.append(" ".join(sentences))
        with open(os.path.join(directory, name), "w") as f:
            f.write("\n\n".join(paras) + "\n")


def tiny_config(corpus, out_dir, steps=5):
    return {
        "model": {"vocab_size": 300, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32,
                  "seq_len": 16, "ffn": "moe"},
        "moe": {"n_experts": 4, "top_k": 2, "d_expert": 16},
        "train": {"steps": steps, "batch_size": 2, "log_every": 1, "eval_every": 0,
                  "eval_windows": 2, "tensorboard": False, "threads": 1},
        "data": {"path": corpus},
        "out_dir": out_dir,
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def train(moe, config, timeout):
    r = subprocess.run([moe, "train", config], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        sys.exit(f"make_cases: training the tiny run failed ({r.returncode}):\n{r.stdout}{r.stderr}")


# --- the cases --------------------------------------------------------------------------


# --- vision: PNG and IDX files by hand -----------------------------------------------------


def write_png_gray(path, rows):
    """An 8-bit grayscale PNG of `rows` (lists of 0..255), with the standard library only."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_png_classes(directory, per_class=12, size=8):
    """Two classes of size x size images: bright left half ("left") or right half ("right")."""
    rng = random.Random(3)
    for c, name in enumerate(("left", "right")):
        os.makedirs(os.path.join(directory, name))
        for i in range(per_class):
            rows = [[(200 if (x < size // 2) == (c == 0) else 30) + rng.randrange(20)
                     for x in range(size)] for _ in range(size)]
            write_png_gray(os.path.join(directory, name, f"{i}.png"), rows)


def write_idx(path, dims, data, magic=b"\0\0\x08"):
    with open(path, "wb") as f:
        f.write(magic + bytes([len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data)


def vision_config(data, out_dir, dataset="png_folder", size=8, classes=2, steps=4):
    return {"task": "vision",
            "model": {"height": size, "width": size, "channels": 1, "n_classes": classes,
                      "conv_channels": [2], "convs_per_stage": 1, "d_model": 8, "n_layers": 1,
                      "ffn": "moe"},
            "moe": {"router": "softmax_topk", "n_experts": 2, "top_k": 1, "d_expert": 8},
            "train": {"steps": steps, "batch_size": 4, "warmup_steps": 1, "log_every": 100,
                      "eval_every": 0, "threads": 2, "tensorboard": False},
            "data": {"dataset": dataset, "path": data, "val_count": 4, "domains": "none"},
            "out_dir": out_dir}


def make_vision_cases(out, cases, moe, timeout):
    """A good vision run (trained here) and hostile image files, checkpoints and folders."""
    C = lambda *p: os.path.join(cases, *p)  # noqa: E731
    vdir = os.path.join(out, "vision")
    write_png_classes(os.path.join(vdir, "pngs"))
    run = os.path.join(vdir, "run")
    config = os.path.join(vdir, "config.json")
    write_json(config, vision_config(os.path.join(vdir, "pngs"), run))
    train(moe, config, timeout)
    header, data = read_safetensors(os.path.join(run, "checkpoint.safetensors"))
    assert header["__metadata__"]["format"] == "moe.cpp/vision", header["__metadata__"]
    # A tampered checkpoint: its config claims d_model 4096 over the tiny tensors.
    write_safetensors(C("vision_d_model_4096.safetensors"),
                      with_config(header, "model", "d_model", 4096), data)
    # Images: not a PNG, a truncated PNG, a FIFO.
    with open(C("not_png.png"), "w") as f:
        f.write("this is text\n")
    good_png = os.path.join(vdir, "pngs", "left", "0.png")
    with open(good_png, "rb") as f:
        blob = f.read()
    with open(C("truncated.png"), "wb") as f:
        f.write(blob[: len(blob) // 2])
    os.mkfifo(C("fifo.png"))
    # A PNG folder with one corrupt image among good ones.
    shutil.copytree(os.path.join(vdir, "pngs"), C("pngs_corrupt"))
    shutil.copy(C("truncated.png"), C("pngs_corrupt", "right", "5.png"))
    # IDX folders (4x4 images, 10 classes): truncated data, bad magic, a label out of range,
    # a gzip stream that is not one, image and label counts that disagree.
    labels = bytes(range(10))
    images = bytes(10 * 16)
    for name, img, lab, img_magic in (("idx_truncated", images[:40], labels, b"\0\0\x08"),
                                      ("idx_magic", images, labels, b"\x01\x02\x08"),
                                      ("idx_label_range", images, labels[:9] + b"\x0c", b"\0\0\x08"),
                                      ("idx_count_mismatch", images[:9 * 16], labels, b"\0\0\x08")):
        os.makedirs(C(name))
        n = len(img) // 16 if name == "idx_count_mismatch" else 10
        write_idx(C(name, "train-images-idx3-ubyte"), [n, 4, 4], img, img_magic)
        write_idx(C(name, "train-labels-idx1-ubyte"), [10], lab)
    os.makedirs(C("idx_gzip_corrupt"))
    with open(C("idx_gzip_corrupt", "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    write_idx(C("idx_gzip_corrupt", "train-labels-idx1-ubyte"), [10], labels)
    write_json(C("vision_idx_config.json"),
               vision_config(C("idx_truncated"), C("never_run"), dataset="fashion_mnist",
                             size=4, classes=10))
    return {"vision_run": run, "vision_config": config, "vision_png": good_png,
            "vision_sha256": sha256(os.path.join(run, "checkpoint.safetensors"))}


# --- multi-task: CSV files ------------------------------------------------------------------


def multitask_config(directory, out_dir, train_csv=None, steps=4):
    return {"task": "multitask",
            "model": {"arch": "mmoe", "d_model": 8, "expert_hidden": 8, "n_experts": 2,
                      "tower_hidden": 4},
            "train": {"steps": steps, "batch_size": 8, "warmup_steps": 1, "log_every": 100,
                      "eval_every": 0, "threads": 1, "tensorboard": False},
            "data": {"train": train_csv or os.path.join(directory, "train.csv"),
                     "val": os.path.join(directory, "val.csv"),
                     "columns": {"categorical": ["colour"], "numeric": ["x"],
                                 "targets": [{"name": "y", "kind": "binary"}]}},
            "out_dir": out_dir}


def make_multitask_cases(out, cases, moe, timeout):
    """A good multi-task run (trained here) and hostile CSV files and checkpoints."""
    C = lambda *p: os.path.join(cases, *p)  # noqa: E731
    mdir = os.path.join(out, "multitask")
    os.makedirs(mdir)
    rng = random.Random(5)
    for name, n in (("train.csv", 40), ("val.csv", 10)):
        with open(os.path.join(mdir, name), "w") as f:
            f.write("colour,x,y\n")
            for _ in range(n):
                x = rng.gauss(0, 1)
                f.write(f"{rng.choice(['red', 'blue'])},{x:.4f},{int(x > 0)}\n")
    run = os.path.join(mdir, "run")
    config = os.path.join(mdir, "config.json")
    write_json(config, multitask_config(mdir, run))
    train(moe, config, timeout)
    header, data = read_safetensors(os.path.join(run, "checkpoint.safetensors"))
    assert header["__metadata__"]["format"] == "moe.cpp/multitask", header["__metadata__"]
    # Tampered checkpoints: a config that claims d_model 4096 or 10^6 experts over the tiny
    # tensors; a vocabulary longer than the embedding table; an encoding that is not JSON.
    write_safetensors(C("multitask_d_model_4096.safetensors"),
                      with_config(header, "model", "d_model", 4096), data)
    write_safetensors(C("multitask_experts_1e6.safetensors"),
                      with_config(header, "model", "n_experts", 1000000), data)
    enc = json.loads(header["__metadata__"]["encoding"])
    enc["categorical"][0]["vocab"] += [f"v{i}" for i in range(1000)]
    write_safetensors(C("multitask_long_vocab.safetensors"),
                      with_metadata(header, encoding=json.dumps(enc)), data)
    write_safetensors(C("multitask_encoding_not_json.safetensors"),
                      with_metadata(header, encoding="{not json"), data)
    # CSV files that break the rules, each as the training file of a run that must not start.
    good = "colour,x,y\nred,1.5,1\n"
    bad_csv = {
        "csv_unterminated_quote.csv": good + '"blue,0.5,1\nred,1,1\n',
        "csv_text_after_quote.csv": good + '"blue"x,0.5,1\n',
        "csv_field_count.csv": good + "blue,0.5\n",
        "csv_not_a_number.csv": good + "blue,half,1\n",
        "csv_target_not_binary.csv": good + "blue,0.5,2\n",
        "csv_target_missing.csv": good + "blue,0.5,\n",
        "csv_missing_column.csv": "colour,x\nred,1.5\n",
        "csv_empty.csv": "",
    }
    for name, text in bad_csv.items():
        with open(C(name), "w") as f:
            f.write(text)
    with open(C("csv_not_utf8.csv"), "wb") as f:
        f.write(b"colour,x,y\nred,1.5,1\ngr\xfcn,0.5,0\n")
    # One record of 17 MiB (over the 16 MiB limit): refused, not swallowed.
    with open(C("csv_huge_record.csv"), "w") as f:
        f.write("colour,x,y\n" + "r" * (17 << 20) + ",1,1\n")
    os.mkfifo(C("csv_fifo.csv"))
    os.makedirs(C("csv_directory.csv"))
    return {"multitask_run": run, "multitask_config": config,
            "multitask_bad_csv": sorted(bad_csv) + ["csv_not_utf8.csv", "csv_huge_record.csv",
                                                    "csv_fifo.csv", "csv_directory.csv"],
            "multitask_sha256": sha256(os.path.join(run, "checkpoint.safetensors"))}


def make_cases(out, moe, timeout):
    cases = os.path.join(out, "cases")
    os.makedirs(cases)
    C = lambda *p: os.path.join(cases, *p)  # noqa: E731

    # The good run, trained once by the real command.
    corpus = os.path.join(out, "corpus")
    write_corpus(corpus)
    good_dir = os.path.join(out, "good")
    run = os.path.join(good_dir, "run")
    os.makedirs(good_dir)
    good_config = os.path.join(good_dir, "config.json")
    write_json(good_config, tiny_config(corpus, run))
    train(moe, good_config, timeout)
    ckpt = os.path.join(run, "checkpoint.safetensors")
    header, data = read_safetensors(ckpt)
    meta = header["__metadata__"]
    assert meta["format"] == "moe.cpp/lm" and "layers.0.attn.wq" in header, sorted(header)

    # (1) JSON nested 100,000 levels: safetensors headers, a config file, checkpoint metadata.
    t = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    deep = deep_json()
    write_raw(C("deep_in_metadata.safetensors"),
              '{"__metadata__":{"format":"x","k":%s},"t":%s}' % (deep, json.dumps(t)), b"\0" * 4)
    for field in ("dtype", "shape", "data_offsets"):
        entry = dict(t)
        entry[field] = "@DEEP@"
        text = json.dumps({"t": entry}).replace('"@DEEP@"', deep)
        write_raw(C(f"deep_in_{field}.safetensors"), text, b"\0" * 4)
    # A whole header that is one deep array (not even an object).
    write_raw(C("deep_header.safetensors"), deep)
    os.makedirs(C("deep_header_run"))
    shutil.copy(C("deep_in_metadata.safetensors"), C("deep_header_run", "checkpoint.safetensors"))
    with open(C("deep_config.json"), "w") as f:
        f.write('{"model": {"d_model": %s}, "out_dir": %s}' % (deep, json.dumps(C("never_run"))))
    with open(C("deep_section_config.json"), "w") as f:
        f.write('{"train": %s}' % ("{\"a\":" * DEEP + "1" + "}" * DEEP))
    # The good checkpoint with a deep text in a metadata value (valid header, deep payload).
    for key in ("tokenizer", "config", "domains"):
        write_safetensors(C(f"deep_meta_{key}.safetensors"), with_metadata(header, **{key: deep}), data)

    # (2) FIFOs where files are expected.
    os.mkfifo(C("fifo.safetensors"))
    os.mkfifo(C("fifo_config.json"))
    os.mkfifo(C("fifo_data.txt"))
    os.makedirs(C("fifo_run"))
    os.mkfifo(C("fifo_run", "checkpoint.safetensors"))
    os.makedirs(C("fifo_in_data_dir"))
    os.mkfifo(C("fifo_in_data_dir", "z_fifo.txt"))  # a directory's FIFO is skipped or refused
    shutil.copy(os.path.join(corpus, "alpha.txt"), C("fifo_in_data_dir", "a.txt"))

    # (3) Memory: metadata claiming a huge model over the tiny tensors; a sparse 8 GB file.
    write_safetensors(C("d_model_4096.safetensors"), with_config(header, "model", "d_model", 4096), data)
    write_safetensors(C("n_experts_1e6.safetensors"),
                      with_config(header, "moe", "n_experts", 1_000_000), data)
    write_safetensors(C("n_layers_1e9.safetensors"),
                      with_config(header, "model", "n_layers", 1_000_000_000), data)
    # seq_len is in no tensor's shape: only the memory check stands between it and the
    # allocation of activations (and a KV cache) for 10^12 positions.
    write_safetensors(C("seq_len_1e12.safetensors"),
                      with_config(header, "model", "seq_len", 1_000_000_000_000), data)
    os.makedirs(C("sparse"))
    with open(C("sparse", "huge.txt"), "wb") as f:
        f.truncate(SPARSE_BYTES)

    # (4) One non-finite weight.
    write_safetensors(C("nan.safetensors"), header, with_value(header, data, "layers.0.attn.wq", math.nan))
    write_safetensors(C("inf.safetensors"), header, with_value(header, data, "layers.0.attn.wq", math.inf))
    write_safetensors(C("neg_inf_emb.safetensors"), header,
                      with_value(header, data, "tok_emb", -math.inf))

    # (5) Dotted keys in a config file.
    cfg = tiny_config(corpus, C("never_run"))
    cfg["train.steps"] = 5
    write_json(C("dotted_top.json"), cfg)
    cfg = tiny_config(corpus, C("never_run"))
    cfg["train"]["lr.max"] = 0.1
    write_json(C("dotted_nested.json"), cfg)

    # (6) The step in the metadata.
    for name, step in (("abc", "abc"), ("20digits", "9" * 20), ("12abc", "12abc"), ("neg5", "-5"),
                       ("space7", " 7"), ("empty", "")):
        write_safetensors(C(f"step_{name}.safetensors"), with_metadata(header, step=step), data)

    # (7) A data directory holding a file whose name is not valid UTF-8.
    d = os.fsencode(C("non_utf8_data"))
    os.makedirs(d)
    shutil.copy(os.path.join(corpus, "alpha.txt"), os.path.join(d, b"alpha.txt"))
    shutil.copy(os.path.join(corpus, "beta.txt"), os.path.join(d, b"b\xff\xfeta-\xc3(.txt"))
    # A directory whose own name is not UTF-8 (a --set value must be valid UTF-8).
    d = os.path.join(os.fsencode(cases), b"dir_\xff")
    os.makedirs(d)
    shutil.copy(os.path.join(corpus, "alpha.txt"), os.path.join(d, b"a.txt"))

    # (9) A corpus of 3 records per file: no validation record for most fractions.
    os.makedirs(C("few_records"))
    for i in range(2):
        with open(C("few_records", f"f{i}.txt"), "w") as f:
            f.write("one two three.\n\nfour five six.\n\nseven eight nine.\n")

    # (10) 200,000 empty tensors, and the same behind a run directory.
    parts = ['"__metadata__":{"format":"many"}']
    parts += ['"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i
              for i in range(MANY_TENSORS)]
    write_raw(C("many_tensors.safetensors"), "{" + ",".join(parts) + "}")
    # The same count with one name given twice at the end: the whole header must be read.
    write_raw(C("many_tensors_dup.safetensors"), "{" + ",".join(parts + [parts[1]]) + "}")
    write_raw(C("many_tensors_2000.safetensors"), "{" + ",".join(parts[:2001]) + "}")

    # Metadata that is not moe.cpp's at all, and a header that lies about its length.
    write_safetensors(C("no_format.safetensors"), {"t": t}, b"\0" * 4)
    with open(C("header_len_huge.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 2**64 - 1) + b"{}")

    vision = make_vision_cases(out, cases, moe, timeout)
    vision.update(make_multitask_cases(out, cases, moe, timeout))

    sums = {name: sha256(os.path.join(run, name)) for name in ("checkpoint.safetensors", "metrics.jsonl")}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"good_run": run, "good_config": good_config, "corpus": corpus,
                   "step": int(meta["step"]), "seq_len": 16, "sha256": sums, **vision}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moe", required=True, help="the moe binary")
    ap.add_argument("--out", required=True, help="directory to (re)create")
    ap.add_argument("--timeout", type=float, default=120, help="seconds for the tiny run")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    make_cases(out, os.path.abspath(args.moe), args.timeout)
    print(f"make_cases: wrote {out}")


if __name__ == "__main__":
    main()
