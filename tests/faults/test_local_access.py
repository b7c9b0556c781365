"""Other users of the same host: weed mini's non-S3 ports serve no object without
credentials (its gRPC ports and sockets demand a client certificate), every port is pinned to
127.0.0.1, and the stack's files are private."""

from __future__ import annotations

import io
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from minio import Minio

from tuneforge.processes import WeedPorts, free_port, wait_until
from tuneforge.settings import EmbeddedSettings, S3Settings, Settings

SECRET = b"tenant data nobody else may read " + uuid.uuid4().hex.encode()


def _weed_process(s3: S3Settings) -> psutil.Process:
    port = s3.endpoint.rsplit(":", 1)[1]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[1:2] == ["mini"] and f"-s3.port={port}" in cmdline:
            return process
    raise AssertionError(f"no weed mini process serves S3 on port {port}")


@pytest.fixture(scope="module")
def minio(s3: S3Settings) -> Minio:
    return Minio(s3.endpoint, access_key=s3.access_key,
                 secret_key=s3.secret_key.get_secret_value(), secure=False)


@pytest.fixture(scope="module")
def stored_object(minio: Minio, s3: S3Settings) -> Iterator[str]:
    key = f"faults/{uuid.uuid4().hex}.bin"
    minio.put_object(s3.bucket, key, io.BytesIO(SECRET), len(SECRET))
    yield key
    minio.remove_object(s3.bucket, key)


def _attempts(bucket: str, key: str) -> list[tuple[str, str, bytes | None]]:
    """Reads and writes by path, as the master, volume server, filer, WebDAV and admin HTTP
    APIs would take them (without credentials)."""
    written = f"faults/intruder-{uuid.uuid4().hex}.bin"
    return [
        ("GET", f"/{bucket}/{key}", None),
        ("GET", f"/buckets/{bucket}/{key}", None),
        ("GET", f"/buckets/{bucket}/", None),
        ("GET", "/dir/assign", None),
        ("GET", "/dir/lookup?volumeId=1", None),
        ("GET", "/1,01637037d6", None),
        ("PUT", f"/buckets/{bucket}/{written}", b"intruder"),
        ("POST", f"/buckets/{bucket}/{written}", b"intruder"),
        ("PUT", f"/{bucket}/{written}", b"intruder"),
        ("POST", "/submit", b"intruder"),
        ("POST", "/1,02637037d6", b"intruder"),
    ]


def test_non_s3_ports_serve_no_object_without_credentials(
    s3: S3Settings, minio: Minio, stored_object: str
) -> None:
    weed = _weed_process(s3)
    s3_port = int(s3.endpoint.rsplit(":", 1)[1])
    listening = [c.laddr for c in weed.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    other_ports = sorted({addr.port for addr in listening} - {s3_port})
    assert other_ports, "weed mini opened no port besides S3?"
    # Every port is one that the command line pins (nothing chosen by weed itself).
    pinned = {int(arg.split("=", 1)[1]) for arg in weed.cmdline()
              if arg.startswith("-") and ".port" in arg and "=" in arg}
    admin = next(int(a.split("=", 1)[1]) for a in weed.cmdline() if a.startswith("-admin.port="))
    assert set(other_ports) <= pinned | {admin + 10000}, (other_ports, pinned)

    attempts = _attempts(s3.bucket, stored_object)
    for port in other_ports:
        for method, path, body in attempts:
            try:
                response = httpx.request(method, f"http://127.0.0.1:{port}{path}", content=body,
                                         timeout=5)
            except httpx.HTTPError:
                continue  # a gRPC port, or the connection was refused: nothing served
            where = f"{method} 127.0.0.1:{port}{path}"
            assert SECRET not in response.content, f"{where} returned the object"
            if method != "GET" or path.startswith("/dir/"):
                assert not response.is_success, f"{where} answered {response.status_code}"
    # Nothing any of those writes attempted exists.
    keys = [o.object_name for o in minio.list_objects(s3.bucket, prefix="faults/",
                                                      recursive=True)]
    assert keys == [stored_object], keys
    assert minio.get_object(s3.bucket, stored_object).read() == SECRET


def test_weed_unix_sockets_live_in_the_data_directory(s3: S3Settings, tmp_root: Path) -> None:
    weed = _weed_process(s3)
    paths = [c.laddr for c in weed.net_connections(kind="unix") if c.laddr]
    data_dir = str(tmp_root / "s3")
    ours = [p for p in paths if p.startswith(data_dir)]
    assert {Path(p).name for p in ours} >= {"filer.sock", "s3.sock"}, paths
    # weed mini has no flag for its gRPC sockets (docs/security.md): those alone stay in /tmp.
    others = [p for p in paths if not p.startswith(data_dir)]
    assert all(Path(p).name.startswith("seaweedfs-") and "-grpc-" in p for p in others), others
    for path in ours:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def _grpc_code(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of one call (any method: the health check) to `target` over `credentials`
    (None: plaintext)."""
    options = [("grpc.ssl_target_name_override", "localhost")]
    channel = (grpc.secure_channel(target, credentials, options=options) if credentials
               else grpc.insecure_channel(target))
    try:
        channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


def test_weed_grpc_refuses_callers_without_the_client_certificate(
    s3: S3Settings, minio: Minio, stored_object: str, tmp_root: Path
) -> None:
    """Every gRPC server of weed mini (master, volume, filer, S3, admin), on its TCP port and
    on its /tmp unix socket, refuses plaintext gRPC and TLS without a client certificate (the
    mTLS of security.toml), while S3 (plain HTTP, S3 signatures) still serves."""
    weed = _weed_process(s3)
    flags = dict(arg.lstrip("-").split("=", 1) for arg in weed.cmdline()
                 if arg.startswith("-") and "=" in arg)
    grpc_ports = {name: int(value) for name, value in flags.items()
                  if name.endswith(".port.grpc")}
    assert set(grpc_ports) == {"master.port.grpc", "volume.port.grpc", "filer.port.grpc",
                               "s3.port.grpc", "admin.port.grpc"}, grpc_ports

    def listening() -> set[int]:
        return {c.laddr.port for c in weed.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    # The admin server may still be starting when this test comes first.
    wait_until(lambda: set(grpc_ports.values()) <= listening(), 30, "weed's gRPC ports")
    found = sorted(listening() & set(grpc_ports.values()))
    sockets = sorted({c.laddr for c in weed.net_connections(kind="unix")
                      if c.laddr and "-grpc-" in c.laddr})
    assert sockets, "weed mini opened no gRPC unix socket?"

    tls = tmp_root / "s3" / "tls"
    ca, cert, key = ((tls / name).read_bytes() for name in ("ca.pem", "weed.pem", "weed-key.pem"))
    without_certificate = grpc.ssl_channel_credentials(root_certificates=ca)
    with_certificate = grpc.ssl_channel_credentials(ca, key, cert)
    targets = [f"127.0.0.1:{port}" for port in found] + [f"unix:{path}" for path in sockets]
    for target in targets:
        assert _grpc_code(target, None) == grpc.StatusCode.UNAVAILABLE, f"plaintext {target}"
        assert _grpc_code(target, without_certificate) == grpc.StatusCode.UNAVAILABLE, (
            f"TLS without a client certificate {target}")
        # The weed's own certificate gets through (weed has no health service): the refusals
        # above are the missing certificate's, not a dead port's.
        assert _grpc_code(target, with_certificate) == grpc.StatusCode.UNIMPLEMENTED, target
    # The sockets (in /tmp, which weed mini does not let us move) admit no other user either.
    for path in sockets:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path

    assert minio.get_object(s3.bucket, stored_object).read() == SECRET
    probe = f"faults/grpc-probe-{uuid.uuid4().hex}.bin"
    minio.put_object(s3.bucket, probe, io.BytesIO(b"probe"), 5)
    try:
        assert minio.get_object(s3.bucket, probe).read() == b"probe"
    finally:
        minio.remove_object(s3.bucket, probe)


def _unreachable(path: Path, root: Path) -> bool:
    """No other user can reach `path`: a directory between it and `root` admits no one else."""
    return any(stat.S_IMODE(parent.stat().st_mode) & 0o077 == 0
               for parent in path.parents if parent == root or root in parent.parents)


def _public_paths(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # removed meanwhile (a lock, a temporary file)
            continue
        if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
            continue
        # weed chmods its volume info files (*.vif) to 0644 whatever the umask: they stay
        # out of reach inside the 0700 data directory (docs/security.md).
        if path.suffix == ".vif" and _unreachable(path, root):
            continue
        found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(root)}")
    return found


def test_stack_data_directory_is_private(tmp_path: Path) -> None:
    """The embedded stack (valkey, weed mini, the API, a worker; vLLM off) writes nothing
    that another user of the host could read."""
    from stack.embedded import Credentials, Stack, embedded_settings

    data_dir = tmp_path / "tuneforge-data"
    ports = WeedPorts.free()
    base = Settings(
        data_dir=data_dir, port=free_port(), grpc_port=free_port(),
        queue_name=f"tf-private-{uuid.uuid4().hex[:6]}",
        embedded=EmbeddedSettings(
            redis_port=free_port(), s3_port=free_port(), s3_grpc_port=ports.s3_grpc,
            s3_master_port=ports.master, s3_master_grpc_port=ports.master_grpc,
            s3_volume_port=ports.volume, s3_volume_grpc_port=ports.volume_grpc,
            s3_filer_port=ports.filer, s3_filer_grpc_port=ports.filer_grpc,
            s3_admin_port=ports.admin))
    previous_umask = os.umask(0o022)  # what a shell usually gives: the stack must not rely on it
    creds = Credentials.load_or_create(data_dir)
    settings = embedded_settings(base, creds)
    settings = settings.model_copy(update={
        "serving": settings.serving.model_copy(update={"embedded": False})})
    stack = Stack(settings, creds, log=lambda _: None)
    try:
        stack.start()
        assert creds.redis_password and creds.redis_password in settings.redis_url
        # The stack's Redis refuses clients without the password.
        import redis as redis_sync

        anonymous = redis_sync.Redis(port=base.embedded.redis_port)
        with pytest.raises(redis_sync.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        # Let every piece write something: an S3 object, the worker's and the API's logs.
        store = Minio(settings.s3.endpoint, access_key=creds.s3_access_key,
                      secret_key=creds.s3_secret_key, secure=False)
        if not store.bucket_exists("probe"):
            store.make_bucket("probe")
        store.put_object("probe", "object", io.BytesIO(b"x"), 1)
        assert not _public_paths(data_dir), _public_paths(data_dir)
    finally:
        stack.stop()
        os.umask(previous_umask)
    assert not _public_paths(data_dir), _public_paths(data_dir)
