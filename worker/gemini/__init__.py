"""Everything that talks to Gemini, and nothing else does.

gateway.py     GeminiGateway: generateContent and the File API through google-genai
errors.py      gemini_errors: every SDK and transport error -> `tasks.errors`, with
               FileUriRejected / FileNotActive for a request's File API URIs
records.py     ImagePart, ModelAnswer, TokenUsage, GenerationOptions, RemoteFile: the
               worker's own types (no SDK type leaves this package)
transport.py   a request's images, one at a time: inline or File API (InlinePlanner)
file_cache.py  sha256 -> upload, shared by the fleet in Redis (single flight)
file_admin.py  `gvw files list | purge`
"""

from worker.gemini.errors import retry_delay_s, translate_api_error
from worker.gemini.gateway import GeminiGateway, read_response
from worker.gemini.records import (
    GenerationOptions,
    ImagePart,
    ModelAnswer,
    RemoteFile,
    TokenUsage,
)

__all__ = [
    "GeminiGateway",
    "GenerationOptions",
    "ImagePart",
    "ModelAnswer",
    "RemoteFile",
    "TokenUsage",
    "read_response",
    "retry_delay_s",
    "translate_api_error",
]
