"""A module that starts a thread when imported (as some libraries do): a warm parent that imports
it could no longer fork safely."""
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), name="import-thread", daemon=True).start()
STARTED = True
