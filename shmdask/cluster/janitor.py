"""The janitor: a tiny process that removes a cluster's shared memory if the client dies.

In: a cluster id (and optionally the cluster's spill folder) on the command
line, and the read end of a pipe as stdin whose only writer is the client
process.  Out: nothing but unlinked files.

A SIGKILLed (or crashed) client runs no ``finally`` and no ``atexit``, so its
segments would stay in /dev/shm until reboot.  The kernel closes the client's
end of the pipe whatever the cause of death; the janitor then sees EOF, ends
the cluster's worker processes and unlinks every
``/dev/shm/shmdask-<cluster_id>-*``.  Workers exit on their own EOF, unless a
task holds the GIL (a long C loop) so that they never notice: the janitor
finds them by their command line (``-m shmdask.cluster.worker ... --cluster
<cluster_id>``, same user), asks them to terminate and kills those still
there a second later.  One may create a segment after the first sweep, so it
sweeps a few more times over a few seconds.  A client that closes its cluster
normally writes a goodbye byte first: one sweep, no process is touched.
The spill folder goes with every sweep (it lives on disk: after a crash it
would outlive even a reboot).

Started as ``python -I -S .../janitor.py CLUSTER_ID [SPILL_DIR]`` (by file
path, so neither the shmdask package nor numpy is imported: it costs a bare
interpreter).  It ignores SIGINT: Ctrl-C in a terminal hits the whole process group, and the
janitor must outlive a client that dies of it.
"""

import os
import shutil
import signal
import sys
import time

SHM_DIR = "/dev/shm"
SWEEP_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)  # seconds after EOF
GOODBYE = b"x"  # written by a client that closed its cluster normally


def sweep(prefix: str) -> int:
    """Unlink every /dev/shm entry that starts with ``prefix``; how many went."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


WORKER_MODULE = b"shmdask.cluster.worker"
TERM_GRACE = 1.0  # seconds between asking the workers to end and killing them


def cluster_workers(cluster_id: str) -> list[int]:
    """Pids of this user's worker processes of ``cluster_id``, by command line."""
    wanted = cluster_id.encode()
    uid = os.getuid()
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if WORKER_MODULE not in args:
            continue
        for flag, value in zip(args, args[1:], strict=False):
            if flag == b"--cluster" and value == wanted:
                pids.append(int(entry))
                break
    return pids


def end_workers(cluster_id: str, grace: float = TERM_GRACE) -> None:
    """SIGTERM the cluster's workers, SIGKILL those still there after ``grace``.
    Each signal goes to a pid just found by its command line, so a recycled pid
    of another process is never hit."""
    for pid in cluster_workers(cluster_id):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not cluster_workers(cluster_id):
            return
        time.sleep(0.05)
    for pid in cluster_workers(cluster_id):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # exited meanwhile
        pass


def wait_for_eof(fd: int) -> bool:
    """Block until the client's end closes; True if it said goodbye first."""
    said_goodbye = False
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            return said_goodbye
        if not data:
            return said_goodbye
        said_goodbye = said_goodbye or GOODBYE in data


def remove_spill_dir(path: str | None, cluster_id: str) -> None:
    """Remove the cluster's spill folder (only one named after this cluster)."""
    if path and os.path.basename(path) == f"shmdask-{cluster_id}-spill":
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list) -> int:
    if len(argv) not in (2, 3) or not argv[1].isalnum():
        sys.stderr.write("usage: janitor.py CLUSTER_ID (alphanumeric) [SPILL_DIR]\n")
        return 2
    cluster_id = argv[1]
    spill_dir = argv[2] if len(argv) == 3 else None
    prefix = f"shmdask-{cluster_id}-"

    def clean_all() -> None:
        sweep(prefix)
        remove_spill_dir(spill_dir, cluster_id)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Being terminated means the cluster is going down with us: clean up first.
    signal.signal(signal.SIGTERM, lambda *_: (clean_all(), os._exit(0)))
    if wait_for_eof(0):
        clean_all()  # the client cleaned up; this is a formality
        return 0
    start = time.monotonic()
    end_workers(cluster_id)
    for delay in SWEEP_DELAYS:
        time.sleep(max(0.0, start + delay - time.monotonic()))
        clean_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
