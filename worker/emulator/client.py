"""Control an emulator running in another process, through its `/_emulator/` endpoints."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class EmulatorControlError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"emulator control call failed with {status}: {body}")
        self.status = status
        self.body = body


class EmulatorControl:
    """`EmulatorControl("http://127.0.0.1:8765").queue_fault("503")`"""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "health").get("status") == "ok")
        except (OSError, EmulatorControlError):
            return False

    def wait_until_up(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.health():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no emulator answering at {self.base_url}")
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "config", settings)

    def queue_fault(
        self,
        kind: str,
        *,
        retry_delay_s: float = 3.0,
        count: int = 1,
        model: str | None = None,
    ) -> dict[str, Any]:
        fault: dict[str, Any] = {"kind": kind, "retry_delay_s": retry_delay_s, "count": count}
        if model is not None:
            fault["model"] = model
        return self._call("POST", "faults", fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def expire_files(self, names: list[str] | None = None) -> list[str]:
        payload = {} if names is None else {"names": names}
        return list(self._call("POST", "files/expire", payload)["expired"])

    def activate_files(self, names: list[str] | None = None) -> list[str]:
        payload = {} if names is None else {"names": names}
        return list(self._call("POST", "files/activate", payload)["activated"])

    def reset(self) -> None:
        self._call("POST", "reset")

    def _call(self, method: str, action: str, payload: Any = None) -> dict[str, Any]:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise EmulatorControlError(exc.code, exc.read().decode("utf-8", "replace")) from exc
        result = json.loads(body) if body else {}
        return result if isinstance(result, dict) else {"result": result}
