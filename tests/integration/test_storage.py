"""worker.storage against real backends: moto's S3 server over HTTP, the local filesystem.

The URI helpers and the error table are pure and checked here too, beside the adapters
they serve.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from tasks.errors import (
    InputNotAllowed,
    InputNotFound,
    InvalidJob,
    StorageUnavailable,
    TooLarge,
    WorkerMisconfigured,
)
from worker.storage import (
    LocalStore,
    ObjectStore,
    S3Store,
    StoreRouter,
    get_json,
    join_uri,
    parse_file_uri,
    parse_s3_uri,
)
from worker.storage.s3 import _translate_s3

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

AWKWARD_KEYS = [
    "plain.json",
    "with space/and more spaces.jpg",
    "plus+sign+c++.png",
    "unicode/Zürich-東京-🐱.heic",
    "percent%20not-decoded.txt",
    "question?and#hash.bin",
]


@pytest.fixture
def s3(s3_env: str) -> S3Store:
    return S3Store(connect_timeout_s=2, read_timeout_s=5, max_attempts=2)


@pytest.fixture
def raw_s3(moto_s3_client: Any) -> Any:
    return moto_s3_client


# ---------------------------------------------------------------- S3: exactly one result


def test_moto_honours_if_none_match_second_create_returns_false(
    s3: S3Store, s3_bucket: str, raw_s3: Any
) -> None:
    uri = f"s3://{s3_bucket}/vision/job-1/result.json"
    assert s3.create_exclusive(uri, b'{"winner": 1}', content_type="application/json") is True
    assert s3.create_exclusive(uri, b'{"winner": 2}', content_type="application/json") is False
    stored = raw_s3.get_object(Bucket=s3_bucket, Key="vision/job-1/result.json")
    assert stored["Body"].read() == b'{"winner": 1}'
    assert stored["ContentType"] == "application/json"


def test_create_exclusive_recognises_its_own_landed_write(s3: S3Store, s3_bucket: str) -> None:
    # what a botocore retry of a PUT whose answer was lost meets: its own object, HTTP 412
    uri = f"s3://{s3_bucket}/job-2/result.json"
    assert s3.create_exclusive(uri, b"same answer", content_type="application/json")
    assert s3.create_exclusive(uri, b"same answer", content_type="application/json") is True
    assert s3.create_exclusive(uri, b"same answer, longer", content_type="text/plain") is False


def test_concurrent_s3_creates_have_one_winner(s3: S3Store, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/race/result.json"
    barrier = threading.Barrier(8)

    def attempt(n: int) -> bool:
        barrier.wait()
        return s3.create_exclusive(uri, f"attempt {n}".encode(), content_type="text/plain")

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count(True) == 1
    winner = outcomes.index(True)
    assert s3.get_bytes(uri, max_bytes=100) == f"attempt {winner}".encode()


class _ConflictingClient:
    """Answers PutObject with 409 ConditionalRequestConflict ``conflicts`` times."""

    def __init__(self, real: Any, conflicts: int) -> None:
        self._real = real
        self.conflicts = conflicts
        self.puts = 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts <= self.conflicts:
            raise _client_error("ConditionalRequestConflict", 409, "PutObject")
        return self._real.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_conditional_conflict_is_retried(s3_bucket: str, raw_s3: Any) -> None:
    client = _ConflictingClient(raw_s3, conflicts=2)
    store = S3Store(client=cast(Any, client))
    uri = f"s3://{s3_bucket}/conflict/result.json"
    assert store.create_exclusive(uri, b"ours", content_type="text/plain") is True
    assert client.puts == 3


def test_endless_conflict_ends_in_an_exists_check(
    s3_bucket: str, raw_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.storage.s3._CONFLICT_BACKOFF_S", 0.001)
    raw_s3.put_object(Bucket=s3_bucket, Key="c/result.json", Body=b"theirs")
    store = S3Store(client=cast(Any, _ConflictingClient(raw_s3, conflicts=100)))
    assert (
        store.create_exclusive(f"s3://{s3_bucket}/c/result.json", b"ours", content_type="x")
        is False
    )
    nothing_there = f"s3://{s3_bucket}/c/other.json"
    with pytest.raises(StorageUnavailable, match="409"):
        store.create_exclusive(nothing_there, b"ours", content_type="x")


# ---------------------------------------------------------------- S3: reads and writes


def test_size_cap_is_enforced_before_reading(s3: S3Store, s3_bucket: str, raw_s3: Any) -> None:
    raw_s3.put_object(Bucket=s3_bucket, Key="big.jpg", Body=b"x" * 5_000_000)
    uri = f"s3://{s3_bucket}/big.jpg"
    with pytest.raises(TooLarge) as info:
        s3.get_bytes(uri, max_bytes=1_000_000)
    assert info.value.details == {"size_bytes": 5_000_000, "max_bytes": 1_000_000}
    assert len(s3.get_bytes(uri, max_bytes=5_000_000)) == 5_000_000  # the cap is inclusive
    assert s3.head_size(uri) == 5_000_000


class _LyingBody:
    """A body longer than its Content-Length said: an object that grew, or a bad proxy."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.requested: list[int | None] = []
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        self.requested.append(amt)
        return self._data if amt is None else self._data[:amt]

    def close(self) -> None:
        self.closed = True


def test_read_stops_at_max_bytes_plus_one_whatever_the_header_says() -> None:
    body = _LyingBody(b"y" * 10_000)

    class Client:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            return {"Body": body, "ContentLength": 10}

    store = S3Store(client=cast(Any, Client()))
    with pytest.raises(TooLarge):
        store.get_bytes("s3://bucket/grew.bin", max_bytes=100)
    assert body.requested == [101]
    assert body.closed


def test_missing_key_and_bucket_are_input_not_found(s3: S3Store, s3_bucket: str) -> None:
    missing = f"s3://{s3_bucket}/no/such/key.jpg"
    with pytest.raises(InputNotFound):
        s3.get_bytes(missing, max_bytes=10)
    with pytest.raises(InputNotFound):
        s3.head_size(missing)
    assert s3.exists(missing) is False
    with pytest.raises(InputNotFound):
        s3.get_bytes("s3://no-such-bucket-here/key.jpg", max_bytes=10)
    assert s3.exists("s3://no-such-bucket-here/key.jpg") is False


def test_write_to_missing_bucket_is_invalid_job(s3: S3Store) -> None:
    with pytest.raises(InvalidJob, match="bucket does not exist"):
        s3.put_bytes("s3://no-such-bucket-here/x.json", b"{}", content_type="application/json")


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip(s3: S3Store, s3_bucket: str, raw_s3: Any, key: str) -> None:
    uri = f"s3://{s3_bucket}/{key}"
    s3.put_bytes(uri, key.encode(), content_type="application/octet-stream")
    # the key S3 holds is exactly the text after the bucket: nothing decoded or encoded
    assert [o["Key"] for o in raw_s3.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [key]
    assert s3.exists(uri)
    assert s3.get_bytes(uri, max_bytes=1000) == key.encode()
    assert list(s3.list_prefix(f"s3://{s3_bucket}/")) == [uri]
    s3.delete(uri)
    assert not s3.exists(uri)
    s3.delete(uri)  # deleting twice is fine


def test_put_bytes_overwrites(s3: S3Store, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/attempts/a1/overlay.png"
    s3.put_bytes(uri, b"first", content_type="image/png")
    s3.put_bytes(uri, b"second", content_type="image/png")
    assert s3.get_bytes(uri, max_bytes=100) == b"second"


def test_list_prefix_paginates_past_1000_keys(s3_env: str, s3_bucket: str, raw_s3: Any) -> None:
    keys = [f"many/{i:05d}.png" for i in range(1030)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: raw_s3.put_object(Bucket=s3_bucket, Key=k, Body=b""), keys))
    raw_s3.put_object(Bucket=s3_bucket, Key="manyother.png", Body=b"")
    raw_s3.put_object(Bucket=s3_bucket, Key="elsewhere/0.png", Body=b"")

    store = S3Store(list_page_size=250)
    pages: list[str] = []
    store._client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **kwargs: pages.append("page")
    )
    listed = list(store.list_prefix(f"s3://{s3_bucket}/many/"))
    assert listed == [f"s3://{s3_bucket}/{k}" for k in keys]
    assert len(pages) == 5  # 250 a page
    # a prefix is a string prefix, as in S3: without the slash it takes the sibling too
    assert len(list(store.list_prefix(f"s3://{s3_bucket}/many"))) == 1031


def test_unreachable_endpoint_is_storage_unavailable(
    monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    store = S3Store(connect_timeout_s=0.5, read_timeout_s=0.5, max_attempts=1)
    with pytest.raises(StorageUnavailable):
        store.get_bytes("s3://bucket/key.jpg", max_bytes=10)
    with pytest.raises(StorageUnavailable):
        store.create_exclusive("s3://bucket/result.json", b"{}", content_type="application/json")


def _client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(cast(Any, response), operation)


@pytest.mark.parametrize(
    ("exc", "writing", "expected"),
    [
        pytest.param(_client_error("NoSuchKey", 404), False, InputNotFound, id="no-such-key"),
        pytest.param(_client_error("404", 404), False, InputNotFound, id="head-404"),
        pytest.param(_client_error("NoSuchBucket", 404), False, InputNotFound, id="no-bucket"),
        pytest.param(_client_error("NoSuchBucket", 404), True, InvalidJob, id="write-no-bucket"),
        pytest.param(_client_error("AccessDenied", 403), False, InputNotFound, id="read-403"),
        pytest.param(_client_error("403", 403), False, InputNotFound, id="head-403"),
        pytest.param(_client_error("AccessDenied", 403), True, InputNotAllowed, id="write-403"),
        pytest.param(_client_error("SlowDown", 503), False, StorageUnavailable, id="slow-down"),
        pytest.param(_client_error("InternalError", 500), True, StorageUnavailable, id="500"),
        pytest.param(_client_error("ServiceUnavailable", 503), False, StorageUnavailable, id="503"),
        pytest.param(_client_error("Whatever", 502), False, StorageUnavailable, id="any-5xx"),
        pytest.param(
            _client_error("RequestTimeout", 400), True, StorageUnavailable, id="timeout-400"
        ),
        pytest.param(
            _client_error("ExpiredToken", 400), False, StorageUnavailable, id="expired-token"
        ),
        pytest.param(
            _client_error("InvalidObjectState", 403), False, InputNotFound, id="archived-object"
        ),
        pytest.param(
            EndpointConnectionError(endpoint_url="http://x"),
            False,
            StorageUnavailable,
            id="refused",
        ),
        pytest.param(
            ReadTimeoutError(endpoint_url="http://x"), False, StorageUnavailable, id="read-timeout"
        ),
        pytest.param(
            ConnectTimeoutError(endpoint_url="http://x"),
            True,
            StorageUnavailable,
            id="conn-timeout",
        ),
        pytest.param(NoCredentialsError(), False, WorkerMisconfigured, id="no-credentials"),
        pytest.param(
            _client_error("InvalidAccessKeyId", 403),
            False,
            WorkerMisconfigured,
            id="wrong-access-key",
        ),
        pytest.param(
            _client_error("SignatureDoesNotMatch", 403),
            True,
            WorkerMisconfigured,
            id="wrong-secret",
        ),
    ],
)
def test_s3_errors_are_translated(exc: Exception, writing: bool, expected: type[Exception]) -> None:
    translated = _translate_s3(exc, "s3://bucket/key", writing=writing)
    assert type(translated) is expected


# ---------------------------------------------------------------- local files


def test_local_exclusive_create_has_one_winner_among_8_threads(tmp_path: Path) -> None:
    store = LocalStore()
    for round_no in range(25):
        folder = tmp_path / f"round-{round_no}"
        uri = f"file://{folder}/result.json"
        barrier = threading.Barrier(8)

        def attempt(n: int, uri: str = uri, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            payload = f'{{"attempt": {n}}}'.encode() * 1000  # big enough to be written in parts
            return store.create_exclusive(uri, payload, content_type="application/json")

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(8)))
        assert outcomes.count(True) == 1, outcomes
        winner = outcomes.index(True)
        assert (folder / "result.json").read_bytes() == f'{{"attempt": {winner}}}'.encode() * 1000
        assert os.listdir(folder) == ["result.json"]  # no temp files left behind


def test_local_exclusive_create_is_readable_by_others_and_whole(tmp_path: Path) -> None:
    store = LocalStore()
    uri = f"file://{tmp_path}/deep/er/result.json"  # parents are created
    assert store.create_exclusive(uri, b"{}", content_type="application/json")
    assert store.create_exclusive(uri, b"[]", content_type="application/json") is False
    path = tmp_path / "deep/er/result.json"
    assert path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_local_put_bytes_replaces_atomically(tmp_path: Path) -> None:
    store = LocalStore()
    uri = f"file://{tmp_path}/a/overlay.png"
    store.put_bytes(uri, b"one", content_type="image/png")
    store.put_bytes(uri, b"two", content_type="image/png")
    assert store.get_bytes(uri, max_bytes=3) == b"two"
    assert os.listdir(tmp_path / "a") == ["overlay.png"]


def test_local_reads(tmp_path: Path) -> None:
    store = LocalStore()
    (tmp_path / "img.jpg").write_bytes(b"z" * 1000)
    uri = f"file://{tmp_path}/img.jpg"
    assert store.head_size(uri) == 1000
    assert store.get_bytes(uri, max_bytes=1000) == b"z" * 1000
    with pytest.raises(TooLarge):
        store.get_bytes(uri, max_bytes=999)
    with pytest.raises(InputNotFound):
        store.get_bytes(f"file://{tmp_path}/missing.jpg", max_bytes=10)
    with pytest.raises(InputNotFound):
        store.head_size(f"file://{tmp_path}/missing.jpg")
    with pytest.raises(InputNotFound, match="not a regular file"):
        store.get_bytes(f"file://{tmp_path}", max_bytes=10)
    assert store.exists(uri)
    assert not store.exists(f"file://{tmp_path}/img.jpg/below-a-file")


def test_local_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputNotFound, match="not a regular file"):
        LocalStore().get_bytes(f"file://{fifo}", max_bytes=10)


def test_local_relative_uris_and_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStore()
    base = "file://./gvw-results"
    for name in ("job-1/result.json", "job-1/masks/000-cat.png", "job-10/result.json"):
        store.put_bytes(join_uri(base, name), b"{}", content_type="application/json")
    (tmp_path / "gvw-results/job-1/.result.json.abc.gvw-tmp").write_bytes(b"half")  # a crash

    assert (tmp_path / "gvw-results/job-1/result.json").is_file()
    assert list(store.list_prefix("file://./gvw-results/job-1/")) == [
        "file://./gvw-results/job-1/masks/000-cat.png",
        "file://./gvw-results/job-1/result.json",
    ]
    assert len(list(store.list_prefix("file://./gvw-results/job-1"))) == 3
    assert list(store.list_prefix("file://./nothing-here/")) == []
    assert get_json(store, "file://./gvw-results/job-1/result.json") == {}


def test_local_delete(tmp_path: Path) -> None:
    store = LocalStore()
    uri = f"file://{tmp_path}/x.png"
    store.put_bytes(uri, b"x", content_type="image/png")
    store.delete(uri)
    store.delete(uri)
    assert not store.exists(uri)


def test_local_write_where_a_file_blocks_the_folder_is_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(InputNotAllowed):
        LocalStore().put_bytes(f"file://{tmp_path}/blocker/x.json", b"{}", content_type="x")


# ---------------------------------------------------------------- routing


def test_router_builds_s3_lazily_and_once(tmp_path: Path) -> None:
    built: list[LocalStore] = []

    def factory() -> ObjectStore:
        built.append(LocalStore())  # stands in for S3Store: only the routing is under test
        return built[-1]

    router = StoreRouter(s3_factory=factory)
    router.put_bytes(f"file://{tmp_path}/a.json", b"{}", content_type="application/json")
    assert router.exists(f"file://{tmp_path}/a.json")
    assert built == []
    for _ in range(3):
        router.for_uri("s3://bucket/key")
    assert len(built) == 1


def test_router_over_real_s3(s3_env: str, s3_bucket: str) -> None:
    router = StoreRouter(connect_timeout_s=2, read_timeout_s=5)
    uri = join_uri(f"s3://{s3_bucket}/vision/", "job-9", "result.json")
    assert router.create_exclusive(uri, b'{"ok": true}', content_type="application/json")
    assert get_json(router, uri) == {"ok": True}
    assert list(router.list_prefix(f"s3://{s3_bucket}/vision/")) == [uri]


def test_router_exists_each_answers_in_order_over_s3_and_files(
    s3_env: str, s3_bucket: str, tmp_path: Path
) -> None:
    router = StoreRouter(connect_timeout_s=2, read_timeout_s=5)
    present = f"s3://{s3_bucket}/each/present.json"
    router.put_bytes(present, b"{}", content_type="application/json")
    local = f"file://{tmp_path}/here.json"
    router.put_bytes(local, b"{}", content_type="application/json")
    uris = [
        f"s3://{s3_bucket}/each/absent.json",
        present,
        local,
        f"file://{tmp_path}/not-here.json",
        f"s3://{s3_bucket}/each/absent-too.json",
    ]
    for _ in range(3):  # the lookups run on a pool: the order must not depend on timing
        assert router.exists_each(uris) == [False, True, True, False, False]
    assert router.exists_each([present]) == [True]
    assert router.exists_each([]) == []


def test_router_exists_each_raises_what_a_lookup_raises(s3_env: str, s3_bucket: str) -> None:
    router = StoreRouter(connect_timeout_s=2, read_timeout_s=5)
    uris = [f"s3://{s3_bucket}/a.json", "gs://bucket/c", f"s3://{s3_bucket}/b.json"]
    with pytest.raises(InputNotAllowed, match="unsupported storage URI"):
        router.exists_each(uris)


@pytest.mark.parametrize(
    "uri", ["http://example.com/a.jpg", "gs://bucket/a.jpg", "/etc/passwd", "S3://bucket/a", ""]
)
def test_router_refuses_unknown_schemes(uri: str) -> None:
    with pytest.raises(InputNotAllowed, match="unsupported storage URI"):
        StoreRouter().get_bytes(uri, max_bytes=10)


# ---------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://inbox/photos/a.jpg", ("inbox", "photos/a.jpg")),
        ("s3://inbox/a b+c ü.jpg", ("inbox", "a b+c ü.jpg")),
        ("s3://inbox/dir//double", ("inbox", "dir//double")),
        ("s3://my.bucket-1/k", ("my.bucket-1", "k")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3:///key",
        "s3://bucket",
        "s3://bucket/",
        "s3://bad bucket/k",
        "file:///x",
        "s3://b/" + "k" * 1025,
    ],
)
def test_malformed_s3_uris_are_invalid_jobs(uri: str) -> None:
    with pytest.raises(InvalidJob):
        parse_s3_uri(uri)


def test_bucket_only_s3_uri_is_a_prefix() -> None:
    assert parse_s3_uri("s3://bucket", require_key=False) == ("bucket", "")


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///abs/path/x.jpg", "/abs/path/x.jpg"),
        ("file://./rel/x.jpg", "./rel/x.jpg"),
        ("file://.", "."),
        ("file://localhost/abs/x", "/abs/x"),
        ("file:///with space/ü+.png", "/with space/ü+.png"),
    ],
)
def test_parse_file_uri(uri: str, path: str) -> None:
    assert parse_file_uri(uri) == path


@pytest.mark.parametrize(
    "uri",
    [
        "file://relative",
        "file://host/x",
        "file:///a/../etc/passwd",
        "file://../x",
        "file://",
        "file:///a\x00b",
        "s3://b/k",
    ],
)
def test_malformed_file_uris_are_invalid_jobs(uri: str) -> None:
    with pytest.raises(InvalidJob):
        parse_file_uri(uri)


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://results/vision", ("job-1", "result.json"), "s3://results/vision/job-1/result.json"),
        ("s3://results/vision/", ("job-1",), "s3://results/vision/job-1"),
        ("s3://results", ("job-1",), "s3://results/job-1"),
        (
            "file://./gvw-results",
            ("j", "masks/000-cat.png"),
            "file://./gvw-results/j/masks/000-cat.png",
        ),
        ("file:///srv/out", ("j",), "file:///srv/out/j"),
        ("file:///", ("j",), "file:///j"),
    ],
)
def test_join_uri(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert join_uri(base, *parts) == expected


@pytest.mark.parametrize(
    "parts", [("..",), ("a/../b",), ("",), ("a//b",), ("/abs",), (".",), ("a\x00",)]
)
def test_join_uri_never_leaves_its_base(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidJob):
        join_uri("s3://results/vision", *parts)


def test_join_uri_needs_a_uri() -> None:
    with pytest.raises(InvalidJob):
        join_uri("results/vision", "x")
