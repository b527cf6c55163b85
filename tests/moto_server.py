"""moto's S3 server, as the tests and benchmarks run it:
``python -m tests.moto_server -H 127.0.0.1 -p PORT``.

moto's own ``moto.server`` serves moto's app with werkzeug's development server, which
closes the connection after every response, so every S3 request of a worker opened a new
TCP connection and moto started a thread for it; real S3 keeps connections alive. This
serves the same app (``DomainDispatcherApplication``, every S3 behaviour moto's) with
waitress, which keeps them alive. And moto's dispatcher lists its own package directory
(some 200 ``isdir`` calls) on every request to tell service names from host names; that
listing is read once here.
"""

from __future__ import annotations

import argparse
import logging
import os

import waitress
from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: iter(_MODULES)  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="requests served at once")
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server sets it
    logging.getLogger("waitress").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, _quiet=True)


if __name__ == "__main__":
    main()
