"""Where bytes come from and where results go: the `ObjectStore` port and its adapters.

    port.py    ObjectStore (Protocol)  head_size, get_bytes, put_bytes, create_exclusive,
                                       exists, delete, list_prefix, list_objects,
                                       read_head, presign_get
               Stores (Protocol)       an ObjectStore for every scheme (the router): the
                                       job's flow's port; exists_each, connect_s3
    s3.py      S3Store                 s3://bucket/key, boto3 (AWS_ENDPOINT_URL_S3)
    local.py   LocalStore              file:///abs/path and file://./relative/path
    router.py  StoreRouter             picks one of the above by the URI's scheme
    uris.py    the one URI parser      every s3:// and file:// URI, the job rules, joins

URIs carry keys and paths verbatim: no percent-decoding, so ``s3://inbox/a b+c.jpg`` is
the key ``a b+c.jpg``; `worker.storage.uris` is the one parser of them. A prefix (`list_prefix`) is a plain string prefix, as in S3: pass a
trailing ``/`` to list a folder.

Errors are translated at this boundary into the project's exception tree:

    situation                                   raised
    ------------------------------------------  ----------------------------------------
    missing key, bucket or file                 InputNotFound
    403 / permission denied on a read           InputNotFound ("access denied"): S3 answers
                                                403 for a missing key to a caller that may
                                                not list the bucket, so the two look alike
    403 / permission denied on a write          InputNotAllowed: the output cannot be used
    write to a missing bucket                   InvalidJob: the output names no bucket
    object larger than max_bytes                TooLarge (checked before the body is read)
    5xx, SlowDown, throttling, timeouts,        StorageUnavailable (retryable)
    connection errors, expired credentials,
    a skewed clock, full disk
    no credentials, wrong credentials           WorkerMisconfigured: the deployment's
                                                fault, permanent (fix, then replay)
    malformed URI, unknown scheme               InvalidJob, InputNotAllowed

The one write that decides a job's outcome is `create_exclusive` (result.json, error.json):
it creates the object only if it does not exist, so of two attempts racing, one wins.
"""

from worker.storage.local import LocalStore
from worker.storage.port import ObjectHead, ObjectInfo, ObjectStore
from worker.storage.router import StoreRouter, get_json, get_text
from worker.storage.s3 import S3Store
from worker.storage.uris import FILE_SCHEME, S3_SCHEME, join_uri, parse_file_uri, parse_s3_uri

__all__ = [
    "FILE_SCHEME",
    "S3_SCHEME",
    "LocalStore",
    "ObjectHead",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "StoreRouter",
    "get_json",
    "get_text",
    "join_uri",
    "parse_file_uri",
    "parse_s3_uri",
]
