"""A deterministic, cheap trainable for resume tests: a score of (x, y) per epoch; checkpoints its epoch."""
import json
import os
import tempfile
import time

from ray import tune


def score(config, epoch):
    x, y = config["x"], config["y"]
    return -((x - 0.3) ** 2) - 0.5 * (y - 0.7) ** 2 + 0.05 * epoch * (1 + x)


def train(config, context):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = json.load(open(os.path.join(d, "state.json")))["epoch"]
    for epoch in range(start + 1, context.max_epochs + 1):
        time.sleep(float(os.environ.get("TOY_SLEEP", "0.15")))
        d = tempfile.mkdtemp()
        json.dump({"epoch": epoch}, open(os.path.join(d, "state.json"), "w"))
        tune.report({"epoch": epoch, "score": score(config, epoch)}, checkpoint=tune.Checkpoint.from_directory(d))
