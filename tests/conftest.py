"""Shared fixtures: configuration reset, and no shared memory left behind."""

from __future__ import annotations

import os

import pytest

import shmdask


@pytest.fixture(autouse=True)
def _fresh_config():
    yield
    shmdask.config.refresh()


def _shm_segments() -> list[str]:
    """Segments of clusters made by this process (cluster ids start with our pid,
    so other test runs on the same machine do not count)."""
    mine = f"shmdask-{os.getpid()}p"
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(mine))
    except FileNotFoundError:  # not Linux
        return []


@pytest.fixture(autouse=True, scope="module")
def _no_shared_memory_left():
    """After every test module, /dev/shm holds no shmdask segment."""
    before = set(_shm_segments())
    yield
    import gc
    import time

    gc.collect()
    deadline = time.time() + 5
    while (left := set(_shm_segments()) - before) and time.time() < deadline:
        time.sleep(0.05)
    assert not left, f"shared-memory segments left behind: {sorted(left)[:10]}"


def run_in_kernel(code: str) -> list:
    """Run ``code`` as one cell in a real Jupyter kernel that imports this
    checkout's shmdask; returns the cell's outputs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {root!r})\n{code}")]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    return nb.cells[0].outputs


@pytest.fixture(scope="module")
def process_client():
    """One LocalCluster client per test module, closed (shared memory freed) at its end."""
    from shmdask.client import Client

    client = Client(n_workers=2, set_as_default=False)
    yield client
    client.close()


@pytest.fixture(params=["sync", "threads", "processes"])
def any_scheduler(request):
    """Each scheduler a collection can run on: a name, or a LocalCluster client."""
    if request.param == "processes":
        return request.getfixturevalue("process_client")
    return request.param


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true; TimeoutError naming ``what`` after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _self_signed_with_cryptography(cert_path, key_path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert path, key path).
    Made with the ``cryptography`` package, or else the openssl command."""
    import shutil
    import subprocess

    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    try:
        _self_signed_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command")
        done = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"openssl could not make a certificate: {done.stderr[-200:]!r}")
    return str(cert), str(key)


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process, per /proc/self/maps (None
    if anonymous memory): where a value's data really lives (run it in a task
    to ask a worker)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None


def _thread_cluster():
    from shmdask.scheduler.local import ThreadCluster

    return ThreadCluster(2)


def _process_cluster():
    from shmdask.cluster.local_cluster import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1)


@pytest.fixture(scope="module", params=[pytest.param(_thread_cluster, id="threads"),
                                        pytest.param(_process_cluster, id="processes")])
def each_cluster(request):
    """A cluster of each kind a Client drives (threads, worker processes), per module."""
    cluster = request.param()
    yield cluster
    cluster.close()
