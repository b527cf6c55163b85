"""A Gemini REST emulator on loopback, for tests, benchmarks and `gvw demo`.

It speaks the wire protocol of the Gemini Developer API closely enough for the real
google-genai SDK (generateContent, the File API with resumable uploads, Google error bodies)
and answers from the pixels: `vision.py` finds the shapes that `scenes.py` draws. It is an
independent witness, so it shares no code with `tasks/` or the rest of `worker/`.

    from worker.emulator import EmulatorServer
    from worker.emulator.scenes import make_scene
"""

from worker.emulator.config import EmulatorConfig
from worker.emulator.server import DEFAULT_PORT, EmulatorServer, serve

__all__ = ["DEFAULT_PORT", "EmulatorConfig", "EmulatorServer", "serve"]
