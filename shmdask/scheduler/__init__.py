"""The scheduler core: one loop for every backend, imported by nothing below it.

- ``state.py``: SchedulerState, the pure task state machine (no threads, no I/O).
- ``engine.py``: Engine, the one scheduler loop around the state.
- ``interfaces.py``: WorkerHandle and DataStore (what a transport implements),
  TaskSpec/TaskResult (what travels), RemoteTraceback.
- ``placement.py``: where tasks with ``workers=``/``resources=`` may run.
- ``pieces.py``: PieceSubmitter, a huge graph handed to the engine in pieces.
- ``local.py``: the sync and threads backends (get_local, ThreadCluster).
- ``records.py``: task-stream records and the TaskStream log.
- ``gc_pause.py``: the garbage collector paused while big graphs are built.
"""
