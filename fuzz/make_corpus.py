#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ that are files rather than hand-typed text.

    fuzz/make_corpus.py --moe build/moe

safetensors/: a tiny language-model checkpoint trained by the `moe` command itself (with
tied embeddings and 4-wide layers it is a few KB: libFuzzer mutates small inputs faster), a
few hand-built files covering every dtype, zero-size tensors and metadata, and malformed
variants (each a fault the reader must name). bpe_tokenizer/: the "tokenizer" metadata
string of that checkpoint, plus hand-written ones. config/ is typed by hand and not made
here.

The safetensors files are packed with struct, not Python's safetensors package, so that the
malformed ones can break exactly one rule each.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors_bytes(tensors, metadata=None, header_override=None, pad_data=b""):
    """tensors: list of (name, dtype, shape, data bytes), laid out in order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = header_override if header_override is not None else json.dumps(header)
    text = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(text)) + text + data + pad_data


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def hand_made_safetensors(out):
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, float("inf"), -0.0)
    bf16 = struct.pack("<4H", 0x3F80, 0xC000, 0x7FC0, 0x0001)
    f64 = struct.pack("<d", 3.141592653589793)
    i64 = struct.pack("<2q", -1, 1 << 40)
    i32 = struct.pack("<i", 7)
    u8 = bytes([1, 2, 255])
    every_dtype = [("w.f32", "F32", [2, 3], f32), ("w.bf16", "BF16", [4], bf16),
                   ("w.f64", "F64", [1], f64), ("ids.i64", "I64", [2], i64),
                   ("ids.i32", "I32", [], i32), ("bytes.u8", "U8", [3], u8),
                   ("empty", "F32", [0, 5], b"")]
    write(f"{out}/every_dtype.safetensors",
          safetensors_bytes(every_dtype, {"format": "pt", "note": "hand made"}))
    write(f"{out}/no_tensors.safetensors", safetensors_bytes([], {"k": "v"}))
    write(f"{out}/empty_header.safetensors", safetensors_bytes([], header_override="{}"))
    # Malformed: one fault each.
    write(f"{out}/bad_empty_file.safetensors", b"")
    write(f"{out}/bad_short_length.safetensors", b"\x10\x00\x00")
    write(f"{out}/bad_length_past_end.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    write(f"{out}/bad_not_json.safetensors", safetensors_bytes([], header_override="{nope"))
    write(f"{out}/bad_unknown_dtype.safetensors",
          safetensors_bytes([("x", "F16", [2], b"\0" * 4)]))
    write(f"{out}/bad_shape_mismatch.safetensors",
          safetensors_bytes([("x", "F32", [3], f32[:8])]))
    overlap = '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},' \
              ' "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}'
    write(f"{out}/bad_overlap.safetensors",
          safetensors_bytes([], header_override=overlap, pad_data=f32[:12]))
    dup = '{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},' \
          ' "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    write(f"{out}/bad_duplicate_key.safetensors",
          safetensors_bytes([], header_override=dup, pad_data=b"\1\2"))
    write(f"{out}/bad_metadata_not_string.safetensors",
          safetensors_bytes([], header_override='{"__metadata__": {"step": 5}}'))
    big = '{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}'
    write(f"{out}/bad_shape_overflow.safetensors", safetensors_bytes([], header_override=big))


TINY_CONFIG = {
    "model": {"vocab_size": 264, "d_model": 4, "n_layers": 1, "n_heads": 1, "d_ff": 4,
              "seq_len": 8, "ffn": "moe", "tie_embeddings": True},
    "moe": {"router": "softmax_topk", "n_experts": 2, "top_k": 1, "d_expert": 4},
    "train": {"steps": 2, "batch_size": 2, "log_every": 1, "eval_every": 0,
              "eval_windows": 1, "threads": 1, "tensorboard": False},
}


def tiny_checkpoint(moe, work):
    os.makedirs(f"{work}/corpus")
    with open(f"{work}/corpus/text", "w") as f:
        f.write("the expert router sends the token to the expert\n%\n" * 40)
    cfg = dict(TINY_CONFIG, data={"path": f"{work}/corpus"}, out_dir=f"{work}/run")
    with open(f"{work}/tiny.json", "w") as f:
        json.dump(cfg, f)
    subprocess.run([moe, "train", f"{work}/tiny.json"], check=True, stdout=subprocess.DEVNULL)
    return f"{work}/run/checkpoint.safetensors"


def metadata_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))["__metadata__"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moe", required=True, help="the built `moe` command")
    args = ap.parse_args()
    st, bpe = f"{HERE}/corpus/safetensors", f"{HERE}/corpus/bpe_tokenizer"
    os.makedirs(st, exist_ok=True)
    os.makedirs(bpe, exist_ok=True)
    hand_made_safetensors(st)
    with tempfile.TemporaryDirectory() as work:
        ckpt = tiny_checkpoint(os.path.abspath(args.moe), work)
        shutil.copy(ckpt, f"{st}/tiny_lm_checkpoint.safetensors")
        write(f"{bpe}/tiny_lm_checkpoint.json", metadata_of(ckpt)["tokenizer"].encode())
    write(f"{bpe}/bytes_only.json", b'{"type":"bpe-bytes","vocab_size":256,"merges":[]}')
    write(f"{bpe}/three_merges.json",
          b'{"type":"bpe-bytes","vocab_size":259,"merges":[[116,104],[256,101],[32,257]]}')
    write(f"{bpe}/bad_forward_reference.json",
          b'{"type":"bpe-bytes","vocab_size":257,"merges":[[256,256]]}')
    write(f"{bpe}/bad_vocab_size.json",
          b'{"type":"bpe-bytes","vocab_size":300,"merges":[[1,2]]}')
    write(f"{bpe}/bad_type.json", b'{"type":"wordpiece","vocab_size":256,"merges":[]}')
    write(f"{bpe}/bad_merge_shape.json",
          b'{"type":"bpe-bytes","vocab_size":257,"merges":[[1,2,3]]}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
