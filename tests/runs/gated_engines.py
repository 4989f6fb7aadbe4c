"""An engine whose warm parent cannot fork its runs until a gate file is gone: its preload
(`gated_preload`) waits at import while the file named by $GATE_FILE exists. It holds a run in the
seconds between its grant and its worker's start, as a warm parent still importing torch does."""
from __future__ import annotations

from engines.noop import NoopEngine


class GatedEngine(NoopEngine):
    name = "gated"
    preload = (*NoopEngine.preload, "gated_preload")
