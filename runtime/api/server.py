"""Starting the API server: the bind policy, tokens, and uvicorn."""
from __future__ import annotations

from ..home import shown_url
from .app import ServerSettings
from .auth import ENV_TOKENS, check_bind, parse_tokens

__all__ = ["ENV_TOKENS", "base_url", "check_bind", "parse_tokens", "serve"]


def serve(settings: ServerSettings, host: str, port: int, log_level: str = "info") -> None:
    check_bind(host, settings.tokens)
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    registry = app.state.registry
    roots = registry.data_roots
    root = base_url(host, port)
    print(f"Serving the Sensei ML API at {root}/data/sensei "
          f"(home {settings.home.root}, store {shown_url(registry.store_url)}, data sets "
          f"{'under ' + roots.describe() if roots else 'anywhere'})\n"
          f"  API docs:   {root}/data/sensei/docs (ReDoc: {root}/data/sensei/redoc)\n"
          f"  Runs page:  {root}/", flush=True)
    server = _graceful_server(uvicorn)(uvicorn.Config(app, host=host, port=port,
                                                      log_level=log_level, access_log=False))
    server.stop_now = app.state.stop_now
    try:
        server.run()
    finally:
        executor = app.state.executor
        if executor is not None:   # a forced exit skipped the lifespan's stop: nothing stays RUNNING
            executor.shutdown(0.0, app.state.stop_now)
        registry.close()
    if server.stop_signal is not None:
        print(f"Stopped cleanly on {server.stop_signal.name}", flush=True)


def base_url(host: str, port: int) -> str:
    """The address to print for a bind address: a wildcard bind is reached on loopback too."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _graceful_server(uvicorn):
    """uvicorn's Server, keeping SIGTERM and SIGINT to itself: the first signal stops the server
    (the lifespan gives running runs their grace period), a second one aborts them at once. After a
    clean stop the process exits 0 instead of re-raising the signal as uvicorn does."""
    import contextlib
    import signal
    import threading

    class GracefulServer(uvicorn.Server):
        stop_signal = None
        stop_now = None

        def handle_exit(self, sig, frame):
            if self.stop_signal is not None and self.stop_now is not None:
                self.stop_now.set()
            self.stop_signal = signal.Signals(sig)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer
