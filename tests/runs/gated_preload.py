"""Imported by a warm parent before it forks a `gated_engines` run: waits while $GATE_FILE exists."""
import os
import time

_gate = os.environ.get("GATE_FILE")
while _gate and os.path.exists(_gate):
    time.sleep(0.05)
