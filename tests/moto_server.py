"""moto's S3 server, as the tests and benchmarks run it: ``python -m tests.moto_server``
takes the arguments of ``python -m moto.server`` and runs it.

One change to moto's cost per request, none to S3's semantics: moto's request dispatcher
lists its own package directory (some 200 ``isdir`` calls) on every request to tell
service names from host names, a fifth of its time per request in a fleet benchmark;
here that listing is read once.

(Serving moto's app with waitress instead, for keep-alive connections as S3 has, was
tried and dropped: a zero-byte PutObject, which botocore sends with ``Expect:
100-continue``, then hung until the client's read timeout.)
"""

from __future__ import annotations

from moto import backends
from moto.server import main

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: iter(_MODULES)  # type: ignore[assignment]

if __name__ == "__main__":
    main()
