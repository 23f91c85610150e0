"""Writing a file so that a failure loses nothing: the new contents go to a temporary file beside the target, which
then replaces it in one rename. A crash leaves the old file or the new one, never half of either; a write that fails
(a full disk, no permission, a folder in the way) is a one-line VaekitError, the old file kept and the temporary
removed. Every file vaekit writes (run folders, pictures, arrays, tables, reports) goes through `atomic_write`."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator, Mapping

from .errors import VaekitError

FIX = "free some disk space, or write elsewhere"
_INPUTS: ContextVar[dict[str, str]] = ContextVar("vaekit_inputs", default={})  # resolved path -> what it is


@contextlib.contextmanager
def inputs_kept(inputs: Mapping[str | Path, str]) -> Iterator[None]:
    """While a command runs, the files and folders it reads (path -> what it is, e.g. "an input of this command")
    are refused as its outputs' targets (check_target): an output never replaces the input it was made from, nor
    adds a file to a folder of data (an image folder) it reads."""
    kept = dict(_INPUTS.get())
    for path, what in inputs.items():
        try:
            resolved = Path(path).expanduser().resolve()
            if resolved.exists():
                kept[str(resolved)] = what
        except (OSError, RuntimeError, ValueError):  # a path that cannot be resolved is nothing read
            continue
    token = _INPUTS.set(kept)
    try:
        yield
    finally:
        _INPUTS.reset(token)


def atomic_write(path: str | Path, write: Callable[[Path], object], fix: str = FIX, run_file: bool = False) -> Path:
    """write(tmp) then rename tmp over `path`. The temporary is `.NAME.XXXXXXXX` + NAME's suffix in the same folder
    (the suffix so that writers choosing a format by it, Pillow and numpy, write the right one). A symbolic link the
    user names is followed (its target written); a named pipe or device is written directly. `fix` ends the
    message of a failed write. Unless `run_file` (a run folder writing its own files), a path that is one of a run
    folder's own files (its config, weights, resume state or metrics) is refused: an output never replaces them.
    A run folder's own file that is a symbolic link is replaced by the file, not followed: a link in a folder from
    elsewhere (an archive, another user's) must not make a run write over the file it points to."""
    path = Path(path)
    link = path.is_symlink()
    if link and not run_file:  # the file it points to is written (atomically there), the link kept
        path, link = path.resolve(), False
    if not link:  # (a run's own file replaces a link, whatever it points to: a folder, a pipe, a device)
        path = check_target(path, run_file)
    if not link and path.exists() and not path.is_file():  # a named pipe or a device (/dev/stdout): written through
        try:
            write(path)
        except OSError as exc:
            raise VaekitError(f"cannot write {path} ({exc.strerror or type(exc).__name__}): {fix}") from None
        return path
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the suffix in lower case: numpy adds ".npy" to a name not ending so (".NPY" too), and writes elsewhere
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix.lower(), dir=path.parent)
        os.close(handle)
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; what vaekit writes is read like any other file
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except VaekitError:
        _remove(tmp)
        raise
    except Exception as exc:  # noqa: BLE001  (OSError, and the writers' own errors that wrap one)
        _remove(tmp)
        if not isinstance(exc, OSError) and not _io_error(exc):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:100]
        number = exc.errno if isinstance(exc, OSError) else None
        code = re.search(r"\(os error (\d+)\)", str(exc))  # safetensors' Rust I/O errors carry the errno
        if code:
            number = int(code.group(1))
            reason = os.strerror(number)
        advice = write_advice(number, path, fix)
        raise VaekitError(f"cannot write {path} ({reason}): {advice}; what was there before is "
                          "kept") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _host() -> str:
    """This machine, and the pid namespace its pids are of (containers sharing a host name and a folder have pids of
    their own), as 8 hex digits."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # (no /proc: macOS, Windows)
        namespace = 0
    return hashlib.sha256(f"{socket.gethostname()}:{namespace}".encode()).hexdigest()[:8]


@contextlib.contextmanager
def scratch_folder(directory: Path, kind: str) -> Iterator[Path]:
    """A folder `.KIND-HOST-PID-XXXXXXXX` in `directory` to stage files in, removed on exit. The ones a killed process
    of this machine left there (its pid gone) are removed first: an export killed by SIGKILL or a power cut leaves no
    scratch behind for good."""
    remove_abandoned(directory, kind)
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{kind}-{_host()}-{os.getpid()}-") as scratch:
        yield Path(scratch)


def remove_abandoned(directory: Path, kind: str) -> list[Path]:
    """The scratch folders of `kind` in `directory` whose process, on this machine, is gone: removed. Those of a
    running process, of another machine (a shared folder) or of another name are left."""
    gone = []
    for path in Path(directory).glob(f".{kind}-*"):
        named = re.fullmatch(rf"\.{re.escape(kind)}-([0-9a-f]{{8}})-(\d+)-\w+", path.name)
        if named and named.group(1) == _host() and path.is_dir() and not _running(int(named.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def _running(pid: int) -> bool:
    if os.name == "nt":  # (os.kill with signal 0 is no probe on Windows: every scratch folder is left)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_advice(number: int | None, path: Path, fix: str) -> str:
    """What to do about a failed write: the caller's own advice, else the one its error calls for (a full disk is
    not the only reason a write fails)."""
    if fix is not FIX:
        return fix
    if number in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder of the path should be
        blocking = next((parent for parent in path.parents if parent.is_file()), None)
        if blocking is not None:
            return f"{blocking} is a file, not a folder: write elsewhere"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a folder you can write to"
    return fix


def check_target(path: str | Path, run_file: bool = False) -> Path:
    """`path` as a file to write, or a VaekitError: a folder, or (unless run_file) a run folder's own file. For a
    command to call before minutes of work, as atomic_write does again when it writes."""
    path = Path(path)
    if not run_file and _run_file(path):
        raise VaekitError(f"{path} is a file of the run in {path.parent}, which writing there would replace: write "
                          f"to another name, e.g. {path.parent / ('out' + path.suffix)}")
    if not run_file and (kept := _INPUTS.get()):
        try:
            resolved = path.expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        what = None if resolved is None else kept.get(str(resolved))
        if what is not None:
            raise VaekitError(f"{path} is {what}, which writing there would replace: write to another name, e.g. "
                              f"{path.parent / ('out' + path.suffix)}")
        if resolved is not None:
            _check_not_inside(path, resolved, kept)
    if path.is_dir():
        raise VaekitError(f"cannot write {path}: it is a folder; give a file name, e.g. "
                          f"{path / ('out' + (path.suffix or '.png'))}")
    return path


def check_outside_inputs(path: Path) -> None:
    """That `path` (a file or folder to write) is not inside a folder of data the command reads (inputs_kept): one
    more file there would be read as data (an image folder's pictures)."""
    kept = _INPUTS.get()
    if not kept:
        return
    try:
        resolved = path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return
    _check_not_inside(path, resolved, kept)


def _check_not_inside(path: Path, resolved: Path, kept: dict[str, str]) -> None:
    inside = next((folder for folder in map(str, resolved.parents) if folder in kept), None)
    if inside is not None:
        raise VaekitError(f"{path} is inside {inside}, {kept[inside]}, which vaekit reads as data: write outside "
                          f"it, e.g. {Path(inside).parent / (path.name)}")


def write_text(path: str | Path, text: str, fix: str = FIX) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fix)


def _run_file(path: Path) -> bool:
    """Whether `path` names a file of the run folder it is in: config.json, resume.json, data.json (what a run on a
    user's file read), a .safetensors file or a metrics.jsonl, in a folder holding config.json beside
    model.safetensors or resume.json (vaekit.checkpoint's)."""
    folder = path.parent
    is_run = (folder / "config.json").is_file() and ((folder / "model.safetensors").is_file()
                                                      or (folder / "resume.json").is_file())
    return is_run and (path.name in ("config.json", "resume.json", "data.json")
                       or path.name.endswith((".safetensors", "metrics.jsonl")))


def _io_error(exc: BaseException) -> bool:
    """A writer's error that stands for a failed write (safetensors raises its own SafetensorError for I/O)."""
    return type(exc).__name__ == "SafetensorError"


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass
