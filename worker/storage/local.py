"""`LocalStore`: the `ObjectStore` port over the local filesystem, for ``file://`` URIs."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import Final

from tasks.errors import GvwError, InputNotAllowed, InputNotFound, StorageUnavailable
from worker.storage.port import ObjectHead, ObjectInfo, too_large
from worker.storage.uris import parse_file_uri

# mkstemp makes 0600 files; results are for other readers too.
_FILE_MODE: Final = 0o644
_TEMP_SUFFIX: Final = ".gvw-tmp"


class LocalStore:
    """`ObjectStore` over the local filesystem, for ``file://`` URIs.

    Writes never show a half-written file: the bytes go to a hidden temporary file in the
    same directory, are fsynced, then appear under the final name in one step
    (``os.replace`` to overwrite, ``os.link`` to create only if absent). A process killed
    mid-write can leave a ``.<name>.<random>.gvw-tmp`` file behind; `list_prefix` skips them.
    """

    def head_size(self, uri: str) -> int:
        path = parse_file_uri(uri)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        if not stat.S_ISREG(st.st_mode):
            raise InputNotFound(f"not a regular file: {uri}")
        return st.st_size

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        path = parse_file_uri(uri)
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputNotFound(f"not a regular file: {uri}")
            if st.st_size > max_bytes:
                raise too_large(uri, st.st_size, max_bytes)
            with os.fdopen(fd, "rb") as file:
                fd = -1  # the file object owns it now
                data = file.read(max_bytes + 1)  # the file may grow after fstat
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        finally:
            if fd != -1:
                os.close(fd)
        if len(data) > max_bytes:
            raise too_large(uri, len(data), max_bytes)
        return data

    def read_head(self, uri: str, *, max_bytes: int) -> ObjectHead:
        path = parse_file_uri(uri)
        try:
            with open(path, "rb") as file:
                st = os.fstat(file.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise InputNotFound(f"not a regular file: {uri}")
                data = file.read(max_bytes)
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        return ObjectHead(data, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")

    def presign_get(self, uri: str, *, ttl_s: int, version_id: str | None) -> str | None:
        return None  # a file on this machine is nothing Gemini could fetch

    def put_bytes(self, uri: str, data: bytes, *, content_type: str) -> None:
        path = parse_file_uri(uri)
        try:
            temp_path = _write_temp_beside(path, data)
            try:
                os.replace(temp_path, path)
            except BaseException:
                _unlink_quietly(temp_path)
                raise
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def create_exclusive(self, uri: str, data: bytes, *, content_type: str) -> bool:
        path = parse_file_uri(uri)
        try:
            if os.path.lexists(path):
                return False  # the common case of a redelivered job: no temp file at all
            temp_path = _write_temp_beside(path, data)
            try:
                # link(2) fails if the name exists, and the name appears with the whole
                # content at once; open(..., "xb") would expose a half-written file.
                os.link(temp_path, path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                return _create_exclusive_without_links(path, data)
            finally:
                _unlink_quietly(temp_path)
            _fsync_dir(os.path.dirname(path))
            return True
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def exists(self, uri: str) -> bool:
        path = parse_file_uri(uri)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        return True

    def delete(self, uri: str) -> None:
        path = parse_file_uri(uri)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def list_objects(self, uri_prefix: str) -> Iterator[ObjectInfo]:
        for uri in self.list_prefix(uri_prefix):
            try:
                info = os.stat(parse_file_uri(uri))
            except OSError:
                continue  # removed while listing
            # no ETag on a file system: size and modification time identify a version
            yield ObjectInfo(uri, info.st_size, f"{info.st_size}-{info.st_mtime_ns}")

    def list_prefix(self, uri_prefix: str) -> Iterator[str]:
        prefix_path = parse_file_uri(uri_prefix)
        # the deepest directory that every match lives under
        if prefix_path.endswith("/"):
            root = prefix_path.rstrip("/") or "/"
        else:
            root = os.path.dirname(prefix_path) or "."
        if not os.path.isdir(root):
            return
        found: list[str] = []

        def on_walk_error(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # a folder deleted while we walk is fine
                raise exc

        try:
            for dir_path, dir_names, file_names in os.walk(root, onerror=on_walk_error):
                # descend only where a match can be: not into every other job's folder
                dir_names[:] = [
                    name
                    for name in dir_names
                    if _may_hold_prefix(os.path.join(dir_path, name), prefix_path)
                ]
                for name in file_names:
                    if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                        continue  # an unfinished write, not an object
                    path = os.path.join(dir_path, name)
                    if path.startswith(prefix_path):
                        found.append(path)
        except OSError as exc:
            raise _translate_os(exc, uri_prefix, writing=False) from exc
        # answer in the URI's own spelling (relative stays relative)
        for path in sorted(found):
            yield uri_prefix + path[len(prefix_path) :]


def _may_hold_prefix(dir_path: str, prefix_path: str) -> bool:
    as_folder = dir_path + "/"
    return as_folder.startswith(prefix_path) or prefix_path.startswith(as_folder)


def _write_temp_beside(path: str, data: bytes) -> str:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=_TEMP_SUFFIX, dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), _FILE_MODE)
            os.fsync(file.fileno())  # the content is on disk before its name is
    except BaseException:
        _unlink_quietly(temp_path)
        raise
    return temp_path


def _create_exclusive_without_links(path: str, data: bytes) -> bool:
    # Filesystems without hard links (some FUSE and SMB mounts): still exclusive, but a
    # reader may briefly see a short file. Readers of result.json parse it, and retry.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return True


def _fsync_dir(directory: str) -> None:
    # the new name survives a power cut only once its directory is on disk
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the data itself is synced
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _translate_os(exc: OSError, uri: str, *, writing: bool) -> GvwError:
    if writing and isinstance(exc, FileExistsError):
        # makedirs met a file where a folder of the output should be
        return InputNotAllowed(f"cannot write {uri}: a file is in the way ({exc.filename})")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        if writing:
            return InputNotAllowed(f"cannot write {uri}: {exc.strerror}")
        return InputNotFound(f"not found: {uri}")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        if writing:
            return InputNotAllowed(f"access denied writing {uri}: {exc.strerror}")
        return InputNotFound(f"not found or access denied: {uri}")
    # ENOSPC, EIO, a stale NFS handle, ...: the disk, not the job
    return StorageUnavailable(f"local storage failed for {uri}: {exc}")
