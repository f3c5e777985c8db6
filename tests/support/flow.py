"""Client threads that keep requests flowing while a test breaks something.

Both replica-kill tests (encoder, model) run the same shape: a few threads post one
request after another until told to stop, every answer is recorded with its start
and end time, and afterwards every refusal must be a clean 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

GEN = "/v1/images/generations"


class RequestFlow:
    """``threads`` clients posting ``body(worker, i)`` to ``GEN`` until :meth:`stop`.

    ``results`` holds one ``{"body", "response", "start", "end"}`` per answer; read it
    through :meth:`snapshot` while the threads run.
    """

    def __init__(
        self,
        url: str,
        body: Callable[[int, int], dict[str, Any]],
        headers: dict[str, str],
        threads: int = 3,
        timeout_s: float = 120,
    ) -> None:
        self.results: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(w, url, body, headers, timeout_s))
            for w in range(threads)
        ]

    def _work(
        self,
        w: int,
        url: str,
        body: Callable[[int, int], dict[str, Any]],
        headers: dict[str, str],
        timeout_s: float,
    ) -> None:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as session:
            i = 0
            while not self._stop.is_set():
                sent = body(w, i)
                start = time.monotonic()
                response = session.post(GEN, json=sent)
                end = time.monotonic()
                with self._lock:
                    self.results.append(
                        {"body": sent, "response": response, "start": start, "end": end}
                    )
                i += 1

    def __enter__(self) -> RequestFlow:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.results)

    def stop(self, join_s: float = 240) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(join_s)

    @property
    def hung(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)


def assert_clean_refusals(failed: list[dict[str, Any]], retry_after: bool = False) -> None:
    """Every failed answer is a 503 ``replica_failed``/``unavailable``, no traceback."""
    for result in failed:
        response = result["response"]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] in ("replica_failed", "unavailable")
        assert "Traceback" not in response.text
        if retry_after:
            assert int(response.headers["retry-after"]) >= 1
