"""Everything that talks to Gemini, and nothing else does.

gateway.py     GeminiGateway: generateContent and the File API through google-genai
errors.py      gemini_errors: every SDK and transport error -> `tasks.errors`, with
               FileUriRejected / FileNotActive for a request's File API URIs
records.py     ImagePart, ModelAnswer, TokenUsage, GenerationOptions, RemoteFile: the
               worker's own types (no SDK type leaves this package)
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
