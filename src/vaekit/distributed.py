"""Several processes, one run: torch.distributed set up from torchrun's environment, and the few collectives the
trainer needs. With one process every function here is a no-op, so single-process training never touches it."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import FollowerStop, VaekitError

log = logging.getLogger(__name__)

# Under `--nproc`: the folder where each process leaves its one-line error (a mistake every process finds, such as a
# damaged resume state), for the launcher to say each different one once, not once per process.
ERROR_DIR = "VAEKIT_ERROR_DIR"


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `size` processes, and its rank on this machine (its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes: checkpoints, metrics, pictures, the progress bar."""
        return self.rank == 0


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def world() -> World:
    """This process's place: from the process group where one is set up, else from torchrun's variables, else a
    world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if _launched():
        return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def setup(device: torch.device) -> World:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): NCCL for CUDA (this
    process on cuda:LOCAL_RANK), gloo on CPUs. Without torchrun's variables: a world of one, nothing set up."""
    if not _launched():
        return World()
    if not dist.is_available():
        raise VaekitError("this torch was built without torch.distributed: train in one process (drop --nproc)")
    if device.type not in ("cpu", "cuda"):
        raise VaekitError(f"training in several processes runs on CPUs (gloo) or CUDA GPUs (NCCL), not "
                          f"{device.type}: use --device cpu or cuda, or one process (drop --nproc)")
    if not dist.is_initialized():
        device = device_for(device, world())
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30), **kwargs)
        log.debug("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
        watch_launcher()
    return world()


LAUNCHER_PID = "VAEKIT_LAUNCHER_PID"  # set by --nproc's launcher for the processes it starts


def watch_launcher(every: float = 1.0) -> None:
    """A process `vaekit train --nproc` started, whose launcher is gone (killed by SIGKILL, which it cannot pass on:
    torchrun starts each process in a session of its own), stops as at a SIGTERM: after a step, every process at
    the same one, with a checkpoint. They trained on unseen and held the run folder's lock, so --resume was refused."""
    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(every)
        log.warning("process %s: the launcher (pid %s) is gone: stopping after this step", os.environ.get("RANK"),
                    launcher)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vaekit-launcher-watch", daemon=True).start()


def _collective_device() -> torch.device:
    """Where the process group's tensors live: NCCL takes GPU tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def device_for(device: torch.device, here: World) -> torch.device:
    """Each process on its own GPU (cuda:LOCAL_RANK); CPUs are shared."""
    if device.type == "cuda" and here.size > 1:
        if here.local_rank >= torch.cuda.device_count():
            raise VaekitError(f"process {here.rank} needs GPU {here.local_rank}, but this machine has "
                              f"{torch.cuda.device_count()}: start at most that many processes per machine")
        torch.cuda.set_device(here.local_rank)
        return torch.device("cuda", here.local_rank)
    return device


def all_sum(tensor: torch.Tensor, here: World) -> torch.Tensor:
    """The elementwise sum over processes (in place); the tensor itself in a world of one."""
    if here.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather(tensor: torch.Tensor, here: World) -> list[torch.Tensor]:
    """Every process's tensor (of one shape), in rank order."""
    if here.size == 1:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(here.size)]
    dist.all_gather(parts, tensor)
    return parts


def agree(ok: bool, here: World, what: str) -> None:
    """A step only the main process takes (preparing the run folder): the others wait for it, and if it failed they
    stop too, quietly; the main process raises its own error, which says why."""
    if here.size == 1:
        return
    flag = torch.tensor([1 if ok else 0], device=_collective_device())
    dist.broadcast(flag, src=0)
    if not int(flag) and not here.main:
        raise FollowerStop(f"process 0 could not {what}: see its message")


def launch(argv: list[str], nproc: int) -> int:
    """`vaekit ... --nproc N`: the same command in N processes on this machine, through torchrun's launcher (the
    elastic agent, run here). A stop signal reaches every process, which stop after a step and a checkpoint. Returns
    the exit code: 0, a process's own (2 for a mistake), or 128 + the signal that stopped the run."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # no oversubscribed cores
    try:
        errors = Path(tempfile.mkdtemp(prefix="vaekit-errors-"))
    except OSError:  # no room for it: each process says its own error
        return _launch(argv, nproc)
    os.environ[ERROR_DIR] = str(errors)  # the processes inherit it
    try:
        return _launch(argv, nproc)
    finally:
        os.environ.pop(ERROR_DIR, None)
        say_errors(errors)
        shutil.rmtree(errors, ignore_errors=True)


def leave_error(message: str) -> bool:
    """In a process of `--nproc`, leave its one-line error for the launcher to say; False elsewhere, or where it cannot
    be written (the process then says it itself)."""
    folder, rank = os.environ.get(ERROR_DIR), os.environ.get("RANK")
    if not folder or not rank or not rank.isdigit():
        return False
    try:
        (Path(folder) / f"{int(rank):06d}.txt").write_text(message, encoding="utf-8")
    except OSError:
        return False
    return True


def say_errors(folder: Path) -> list[str]:
    """The errors the processes left, each different one said once, in the order of the processes' ranks."""
    said: list[str] = []
    for path in sorted(folder.glob("*.txt")):
        try:
            message = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if message not in said:
            said.append(message)
            sys.stderr.write(f"vaekit: error: {message}\n")
    return said


def _launch(argv: list[str], nproc: int) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    log.info("launching %d processes: torchrun --standalone --nproc-per-node %d -m vaekit %s", nproc, nproc,
             " ".join(argv))
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:  # the processes say what went wrong
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the processes watch it: gone, they stop (watch_launcher)
    try:
        torchrun.run(torchrun.parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "vaekit", *argv]))
    except SignalException as stop:
        return 128 + int(stop.sigval)
    except ChildFailedError as failed:
        return _failure_code(failed.failures)
    finally:
        os.environ.pop(LAUNCHER_PID, None)  # this process's own: a later torchrun from it is no child of this launch
    return 0


def _failure_code(failures: dict) -> int:
    """The run's exit code from its failed processes (rank -> failure with exitcode, timestamp), most telling first:
    a user mistake (2, said by the process that found it); a process killed from outside (out of memory: SIGKILL),
    said here in one line as no process could say it, 128 + the signal; a process's own error code (process 0's
    first); else the first process stopped by SIGTERM or SIGABRT, what the launcher or a broken collective does to
    the others after one failed. Timestamps are whole seconds, so ties go to the lower rank."""
    if not failures:
        return 1
    items = sorted(failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    if any(f.exitcode == 2 for _, f in items):
        return 2
    aftermath = (-signal.SIGTERM, -signal.SIGABRT)
    killed = [(rank, f) for rank, f in items if f.exitcode < 0 and f.exitcode not in aftermath]
    own = [(rank, f) for rank, f in items if f.exitcode > 0]
    if not killed and own:
        return dict(own).get(0, own[0][1]).exitcode
    rank, first = (killed or items)[0]
    code = first.exitcode
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    guess = " (out of memory?)" if name == "SIGKILL" else ""
    sys.stderr.write(f"vaekit: process {rank} was killed by {name}{guess}; the others were stopped\n")
    return 128 - code


def broken_collective(exc: BaseException) -> bool:
    """Whether an error is a collective that failed because another process went away (not this process's own)."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def barrier(here: World) -> None:
    """Every process waits here for the others (process 0's last writes, before any leaves the group)."""
    if here.size > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (before the interpreter's own teardown, which may otherwise abort in gloo's threads)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
