"""Who may talk to a scheduler: cluster keys, TLS contexts and the HMAC handshake.

What flows in and out:

- **Keys.** A scheduler's key is given (``auth_key=``, ``$SHMDASK_AUTH_KEY``)
  or made fresh and written to a user-only key file named after the address,
  where peers of the same user on the same host find it by themselves.  Beside
  it, a ``.owner`` file names the scheduler process (pid and start time): the
  key file of a scheduler that died without removing it (``kill -9``) is
  *stale*, ignored by peers and removed by the next scheduler that starts.
- **TLS** (optional) wraps the socket before the handshake; contexts come from
  certificate paths given as arguments or ``$SHMDASK_TLS_*``.
- **Handshake** (raw bytes, nothing unpickled): the peer sends ``MAGIC,
  version``; the listener answers ``"N", nonce_s``; the peer sends ``nonce_c,
  HMAC-SHA256(key, "client" + nonce_s + nonce_c)``; the listener checks it
  with :func:`hmac.compare_digest` and answers ``"K" + HMAC(key, "server" +
  nonce_c + nonce_s)`` so the peer knows in turn that it talks to a holder of
  the key before it unpickles anything.  A refusal is ``"E"``, a 2-byte length
  and a reason in ASCII.  Both sides are bounded by a timeout.

Why raw bytes: unpickling executes code, so nothing a peer sends is unpickled
before it has proved it holds the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import socket
import ssl
import struct
from pathlib import Path

from shmdask.cluster.comm import AuthenticationError, CommClosedError, ProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"SHMDASK\x00"
HANDSHAKE_TIMEOUT = 10.0  # seconds a peer has to prove it holds the key
_NONCE = 32
_MAC = 32
_VERSION = struct.Struct("!H")
_HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")


# ----------------------------------------------------------------------------- keys

def key_dir() -> Path:
    """Where a scheduler leaves its key for peers of the same user on this host."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "shmdask" / "keys"
    return Path.home() / ".shmdask" / "keys"


_LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::", "")


def key_file(host: str, port: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host or "127.0.0.1")
    return key_dir() / f"{safe}_{port}.key"


def as_key(key: str | bytes | None) -> bytes | None:
    """A key given by the user (text or bytes); None stays None."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.strip().encode()
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"auth_key must be str or bytes, not {type(key).__name__}")
    if not key:
        raise ValueError("auth_key is empty")
    return bytes(key)


def new_key() -> bytes:
    """A fresh random cluster key (as text bytes: it can be pasted into an env var)."""
    return secrets.token_bytes(32).hex().encode()


def write_key_file(host: str, port: int, key: bytes) -> Path:
    """Write ``key`` where same-host peers look for it; readable by this user only.
    The ``.owner`` file beside it names this process."""
    path = key_file(host, port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    remove_stale_key_files(path.parent)
    _write_private(owner_file(path), _owner_stamp(os.getpid()).encode())
    _write_private(path, key)
    return path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def owner_file(path: Path) -> Path:
    """Where the owner of key file ``path`` is recorded."""
    return path.with_suffix(".owner")


def _owner_stamp(pid: int) -> str:
    """``pid start-time``: the start time tells a recycled pid from the owner."""
    import psutil

    return f"{pid} {psutil.Process(pid).create_time():.3f}"


def is_stale(path: Path) -> bool:
    """True if the scheduler that wrote key file ``path`` is gone.  A key file
    without an owner record (or one we cannot read) is taken as live."""
    try:
        pid_text, created = owner_file(path).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    import psutil

    try:
        owner = psutil.Process(pid)
        if owner.status() == psutil.STATUS_ZOMBIE:
            return True
        return f"{owner.create_time():.3f}" != f"{float(created):.3f}"
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. not allowed to look: assume it lives
        return False


def remove_stale_key_files(directory: Path | None = None) -> list[Path]:
    """Remove the key files (and owner records) of schedulers that are gone."""
    directory = directory or key_dir()
    removed = []
    try:
        paths = [p.with_suffix(".key") for p in directory.glob("*.owner")]
    except OSError:
        return removed
    for path in paths:
        if is_stale(path):
            for p in (path, owner_file(path)):
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(path)
    return removed


def find_key(host: str, port: int) -> bytes | None:
    """The key of the scheduler at host:port: $SHMDASK_AUTH_KEY, else its key file."""
    env = os.environ.get("SHMDASK_AUTH_KEY")
    if env:
        return as_key(env)
    candidates = [host]
    if host in _LOOPBACK or host == socket.gethostname():
        candidates += [h for h in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::",
                                   socket.gethostname()) if h != host]
    # The scheduler may have run with or without $XDG_RUNTIME_DIR: look in both.
    dirs = [key_dir(), Path.home() / ".shmdask" / "keys"]
    for h in candidates:
        for d in dirs:
            path = d / key_file(h, port).name
            try:
                data = path.read_bytes().strip()
            except OSError:
                continue
            if data and not is_stale(path):
                return data
    return None


# ----------------------------------------------------------------------------- TLS

def server_ssl_context(cert: str | None, key: str | None = None,
                       ca: str | None = None) -> ssl.SSLContext | None:
    """TLS for a listener: its certificate (and key); with ``ca``, peers must
    present a certificate signed by it."""
    if cert is None:
        if key is not None or ca is not None:
            raise ValueError("TLS needs tls_cert= (and tls_key=) on the scheduler")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets (nothing resumes sessions): they would arrive
    # after the handshake as a message that reading has to process.  Reads and
    # writes of one connection never run at once anyway (comm._TlsChannel).
    ctx.num_tickets = 0
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(ca: str | None, cert: str | None = None,
                       key: str | None = None) -> ssl.SSLContext | None:
    """TLS for a worker or client: trust ``ca``; present ``cert`` if given."""
    if ca is None and cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        ctx.load_verify_locations(ca)
    else:
        ctx.load_default_certs()
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_from_env() -> dict:
    """TLS options from $SHMDASK_TLS_CA / _CERT / _KEY (for ``Client("tls://...")``)."""
    return {"tls_ca": os.environ.get("SHMDASK_TLS_CA"),
            "tls_cert": os.environ.get("SHMDASK_TLS_CERT"),
            "tls_key": os.environ.get("SHMDASK_TLS_KEY")}


# ----------------------------------------------------------------------------- handshake

def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        try:
            got = sock.recv_into(view[pos:])
        except TimeoutError:
            raise ProtocolError(f"timed out waiting for {what}") from None
        except OSError as exc:
            raise CommClosedError(f"connection lost while reading {what}: {exc}") from None
        if not got:
            if pos == 0:
                raise CommClosedError(f"connection closed before {what}")
            raise ProtocolError(f"connection closed in the middle of {what}")
        pos += got
    return bytes(buf)


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, label + b"".join(parts), hashlib.sha256).digest()


def _refuse(sock: socket.socket, reason: str) -> None:
    text = reason.encode("ascii", "replace")[:1000]
    with contextlib.suppress(OSError):
        sock.sendall(b"E" + struct.pack("!H", len(text)) + text)


def _drain(sock: socket.socket, limit: int = 1 << 16) -> None:
    """Read what the peer still sends (briefly), so that closing does not reset
    the connection before it has read our answer."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(0.2)
    with contextlib.suppress(OSError):
        while limit > 0:
            chunk = sock.recv(4096)
            if not chunk:
                break
            limit -= len(chunk)


def server_handshake(sock: socket.socket, key: bytes, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Make the peer prove it holds ``key``; raise ProtocolError/AuthenticationError.

    The peer speaks first, so that a stray HTTP client or port scanner gets a
    clear answer (or nothing) rather than our greeting."""
    sock.settimeout(timeout)
    magic = _recv_exact(sock, len(MAGIC), "the handshake")
    if magic != MAGIC:
        if magic[:4] in _HTTP_METHODS:
            body = b"this is a shmdask scheduler, not a web server\n"
            with contextlib.suppress(OSError):
                sock.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                _drain(sock)
            raise ProtocolError("peer sent an HTTP request")
        raise ProtocolError(f"peer is not speaking the shmdask protocol (first bytes {magic!r})")
    (version,) = _VERSION.unpack(_recv_exact(sock, _VERSION.size, "the protocol version"))
    if version != PROTOCOL_VERSION:
        _refuse(sock, f"protocol version {version} is not supported "
                      f"(this scheduler speaks {PROTOCOL_VERSION})")
        raise ProtocolError(f"peer speaks protocol version {version}, we speak "
                            f"{PROTOCOL_VERSION}")
    nonce_s = secrets.token_bytes(_NONCE)
    try:
        sock.sendall(b"N" + nonce_s)
    except OSError as exc:
        raise CommClosedError(f"peer went away during the handshake: {exc}") from None
    nonce_c = _recv_exact(sock, _NONCE, "the handshake nonce")
    mac = _recv_exact(sock, _MAC, "the handshake proof")
    if not hmac.compare_digest(mac, _mac(key, b"shmdask-client", nonce_s, nonce_c)):
        _refuse(sock, "authentication failed: wrong or missing cluster key")
        raise AuthenticationError("peer failed authentication (wrong or missing key)")
    try:
        sock.sendall(b"K" + _mac(key, b"shmdask-server", nonce_c, nonce_s))
    except OSError as exc:
        raise CommClosedError(f"peer went away during the handshake: {exc}") from None


def client_handshake(sock: socket.socket, key: bytes, timeout: float = HANDSHAKE_TIMEOUT,
                     peer: str = "the scheduler") -> None:
    """Prove we hold ``key`` and check that the listener holds it too."""
    sock.settimeout(timeout)
    try:
        sock.sendall(MAGIC + _VERSION.pack(PROTOCOL_VERSION))
    except OSError as exc:
        raise CommClosedError(f"{peer} went away during the handshake: {exc}") from None
    status = _recv_exact(sock, 1, f"the greeting of {peer}")
    if status == b"N":
        nonce_s = _recv_exact(sock, _NONCE, "the handshake nonce")
        nonce_c = secrets.token_bytes(_NONCE)
        try:
            sock.sendall(nonce_c + _mac(key, b"shmdask-client", nonce_s, nonce_c))
        except OSError as exc:
            raise CommClosedError(f"{peer} went away during the handshake: {exc}") from None
        status = _recv_exact(sock, 1, "the handshake answer")
        if status == b"K":
            mac = _recv_exact(sock, _MAC, "the scheduler's proof")
            if not hmac.compare_digest(mac, _mac(key, b"shmdask-server", nonce_c, nonce_s)):
                raise AuthenticationError(f"{peer} does not hold our cluster key")
            return
    if status == b"E":
        (n,) = struct.unpack("!H", _recv_exact(sock, 2, "the refusal"))
        reason = _recv_exact(sock, n, "the refusal").decode("ascii", "replace")
        if "authentication" in reason:
            raise AuthenticationError(f"{peer} refused us: {reason}")
        raise ProtocolError(f"{peer} refused us: {reason}")
    raise ProtocolError(f"{peer} is not a shmdask scheduler (it answered {status!r})")
