"""Start a train file on several processes with torchrun: `python -m prepare.launch train.py [ARGS]`.

An experiment's `run` line (finetune's) names this module so that the number of processes is not
the agent's to choose: N is the number of CUDA devices the run can see (the harness's `--gpus`
narrows them) on the cuda profile, and 2 elsewhere (CPU ranks talking over gloo: how CI proves
multi-process runs). The module replaces itself (`os.execv`) with

    python -m torch.distributed.run --standalone --nproc-per-node N train.py ARGS

so torchrun is the process the harness started, in the run's process group. torchrun starts
each rank in a session of its own; the harness still ends them all: torchrun stops its ranks
when it is sent SIGTERM, and any rank left behind (torchrun killed with SIGKILL, a rank ignoring
SIGTERM) carries the run's AUTORESEARCH_RUN_ID, or lives in the sandbox's PID namespace, which
is what `harness.night.reaper.end_of_run` kills by.

The ranks rendezvous on the loopback interface (`--standalone`; GLOO_SOCKET_IFNAME and
NCCL_SOCKET_IFNAME default to `lo`), which exists in a sandbox without network too.
"""

from __future__ import annotations

import os
import sys


def nproc() -> int:
    """Processes to start: visible CUDA devices on the cuda profile, else 2."""
    from prepare import env

    if env.device() == "cuda":
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
    return 2


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m prepare.launch TRAIN_FILE [ARGS ...]", file=sys.stderr)
        return 2
    n = nproc()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default for several ranks, said aloud
    print(f"launch: torchrun --standalone --nproc-per-node {n} {' '.join(argv)}", flush=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *argv]
    os.execv(sys.executable, cmd)
    return 1  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
