"""Two real gloo ranks on CPU for tests, in fresh *spawned* processes.

``accelerate.debug_launcher`` forks the pytest process. A fork inherits whatever the parent already
set up — a used OpenMP thread pool (deadlocks in the child) or an initialised ``AcceleratorState``
singleton (both children then believe they are rank 0). Spawned children start clean.
"""

import os
import socket
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ThenLeaveGroup:
    """``function(*args)``, then a barrier and ``destroy_process_group``.

    A gloo group still alive at interpreter exit can abort the process in its destructor (SIGABRT,
    "terminate called without an active exception") after the work is done; seen in about 1 of 3 runs.
    """

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        self.function(*args)
        from accelerate import Accelerator

        accelerator = Accelerator()  # the state the function's own Accelerator set up
        accelerator.wait_for_everyone()
        accelerator.end_training()


def launch_two_ranks(function, *args, env=None):
    """Run ``function(*args)`` in two spawned processes forming one gloo group (one torch thread each).

    ``function`` must be importable by module path (a top-level function of a test module); ``env``
    adds environment variables for the ranks.
    """
    launch_ranks(function, *args, nprocs=2, env=env)


def launch_ranks(function, *args, nprocs: int = 2, env=None):
    """Like :func:`launch_two_ranks` with ``nprocs`` spawned processes (1 gives a clean single process)."""
    from accelerate.utils import patch_environment
    from accelerate.utils.launch import PrepareForLaunch
    from torch.multiprocessing import start_processes

    # (a file in a temporary directory: torch's FileStore deletes its file when the ranks are done)
    with tempfile.TemporaryDirectory() as rendezvous, patch_environment(
        world_size=nprocs, master_addr="127.0.0.1", master_port=str(free_port()), accelerate_mixed_precision="no",
        accelerate_debug_rdv_file=os.path.join(rendezvous, "store"), accelerate_use_cpu="yes",
        gloo_socket_ifname="lo", omp_num_threads=1, **(env or {}),
    ):
        start_processes(PrepareForLaunch(_ThenLeaveGroup(function), debug=True), args=args, nprocs=nprocs, start_method="spawn")
