#!/usr/bin/env python3
"""Reads a TensorBoard run directory with TensorBoard's own loaders (run by
tests/test_tensorboard.cpp).

Usage: read_tensorboard.py RUN_DIR

Loads the run with EventAccumulator, the class TensorBoard's scalar dashboard is built on
(its record reader checks both CRCs of every TFRecord and parses the Event protos), and each
event file with EventFileLoader for the first event's file_version, which the accumulator
does not keep. Prints one JSON object to stdout:
  {"scalars": {TAG: [[step, value, wall_time], ...]}, "file_versions": [FIRST_EVENT_VERSION, ...]}
"""
import glob
import json
import os
import sys

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run_dir):
    # size_guidance 0 keeps every scalar (the default samples 10,000 per tag).
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["scalars"]:
        scalars[tag] = [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)]
    versions = []
    for path in sorted(glob.glob(os.path.join(run_dir, "*tfevents*"))):
        first = next(iter(event_file_loader.EventFileLoader(path).Load()), None)
        versions.append(first.file_version if first is not None else None)
    json.dump({"scalars": scalars, "file_versions": versions}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
