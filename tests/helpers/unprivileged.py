"""The exporter run as the image's unprivileged user (uid 65532), from wherever the clone lives.

That user owns nothing and is in no group, so it reads only what "others" may read. A clone under a mode-700
directory (``/root/...``, any ``mktemp -d``), a venv inside it, or an interpreter under ``/root`` (pyenv) is out
of its reach, and the exporter would not even start. ``stage()`` copies what the exporter needs into a fresh
mode-755 directory under the system temporary directory:

- the package source (``exporter/``) and ``config.example.yml``: always (small; always the code under test);
- the test venv's site-packages (the dependencies): when that user cannot read them where they are;
- the interpreter, its standard library and its shared ``libpython``: when that user cannot read them.

Files are hard links where the file system allows it (no space, instant) and copies otherwise; links are
never written to or chmod-ed (they share the original's inode). The staged runtime is then checked by
importing the exporter as that user, so a test that uses it fails on its own assertions, never on "could not
start". Where nothing can make it readable (the temporary directory itself is closed to others), ``stage``
raises ``Unavailable`` naming the directory, and the test skips with that reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

UID = 65532  # the Dockerfile's USER
REPO = Path(__file__).resolve().parents[2]
PACKAGE = "exporter"
# What the unprivileged exporter reads from the clone besides the package (tests pass it as --config.file).
REPO_FILES = ("config.example.yml",)
# Never staged: the editable install of the clone itself (the copy of the source replaces it).
_EDITABLE = ("__editable__", "connectivity_exporter", "_connectivity_exporter")


class Unavailable(Exception):
    """The unprivileged user cannot be given a runtime here; the message names the directory and the fix."""


def blocked_directory(path: str | os.PathLike[str]) -> Path | None:
    """The first directory on the way to ``path`` (symlinks resolved, ``path`` itself if it is a directory)
    that a user who is neither its owner nor in its group cannot enter; ``None`` if every one can be."""
    real = Path(os.path.realpath(path))
    chain = [*reversed(real.parents), real] if real.is_dir() else list(reversed(real.parents))
    for directory in chain:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def readable_by_others(path: str | os.PathLike[str]) -> bool:
    """Whether a user who is neither owner nor in the group can reach and read ``path``."""
    return blocked_directory(path) is None and bool(os.stat(path).st_mode & stat.S_IROTH)


@dataclass
class Runtime:
    """How to run ``python -m exporter`` as ``UID``: interpreter, environment and working directory."""

    directory: Path  # the staging directory (removed by ``close``)
    python: str  # an interpreter the user can execute
    root: Path  # a readable copy of the package and REPO_FILES: the working directory and PYTHONPATH entry
    env: dict[str, str] = field(default_factory=dict)  # added to the caller's environment
    staged: list[str] = field(default_factory=list)  # what had to be copied, for messages

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) without its Python settings, plus the runtime's."""
        inherited = {k: v for k, v in (base or os.environ).items() if not k.startswith("PYTHON")}
        inherited.pop("VIRTUAL_ENV", None)
        return {**inherited, **self.env}

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(part == "__pycache__" or part.startswith(_EDITABLE) for part in parts)


def _place(source: Path, target: Path, exclude: Iterable[str] = ()) -> None:
    """Mirror the tree ``source`` at ``target``: directories made 755, files linked (or copied and made 644
    when the original is not readable by others or cannot be linked); names in ``exclude`` are left out."""
    excluded = set(exclude)
    for current, directories, files in os.walk(source):
        relative = Path(current).relative_to(source)
        directories[:] = [d for d in directories if d not in excluded and not _skipped((*relative.parts, d))]
        (target / relative).mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(target / relative, 0o755)  # a new directory of ours (the umask may have narrowed it)
        for name in files:
            if name in excluded or _skipped((*relative.parts, name)):
                continue
            _place_file(Path(current) / name, target / relative / name)


def _place_file(source: Path, target: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    if os.stat(source).st_mode & stat.S_IROTH:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed here: a copy does the same
            pass
    shutil.copy2(source, target)
    os.chmod(target, (os.stat(target).st_mode | 0o444) & ~0o022)  # our own copy: readable, never writable


def _site_packages() -> list[Path]:
    """The running environment's site-packages (a venv's own, not the base interpreter's)."""
    found = {Path(sysconfig.get_path(kind)) for kind in ("purelib", "platlib")}
    return sorted(path for path in found if path.is_dir())


def _interpreter_files() -> Iterator[tuple[Path, Path]]:
    """(original, path under the staged prefix) of what the interpreter needs: its executable, its standard
    library (without site-packages and the test suite) and its shared libpython, if it has one."""
    executable = Path(os.path.realpath(sys.executable))
    base = Path(os.path.realpath(sys.base_prefix))
    yield executable, Path("bin") / executable.name
    stdlib = Path(os.path.realpath(sysconfig.get_path("stdlib")))  # the base interpreter's, also in a venv
    yield stdlib, stdlib.relative_to(base) if base in stdlib.parents else Path("lib") / stdlib.name
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    libdir = Path(sysconfig.get_config_var("LIBDIR") or base / "lib")
    if library.endswith(".so") or ".so." in library:
        for candidate in sorted(libdir.glob(f"{library}*")):
            yield candidate, Path("lib") / candidate.name


def _interpreter_readable() -> bool:
    return all(
        readable_by_others(original) if original.is_file() else blocked_directory(original) is None
        for original, _ in _interpreter_files()
    )


def stage(temporary: str | None = None) -> Runtime:
    """A runtime for ``UID`` in a new mode-755 directory under ``temporary`` (default: the system's)."""
    parent = Path(temporary or tempfile.gettempdir())
    blocked = blocked_directory(parent)
    if blocked is not None:
        raise Unavailable(
            f"uid {UID} cannot enter {blocked} (mode {stat.filemode(os.stat(blocked).st_mode)}), where the "
            f"readable copy of the exporter would go: point TMPDIR at a directory others can enter"
        )
    directory = Path(tempfile.mkdtemp(prefix="unprivileged-runtime-", dir=parent))
    os.chmod(directory, 0o755)
    runtime = Runtime(directory=directory, python=os.path.realpath(sys.executable), root=directory / "src")
    try:
        _place(REPO / PACKAGE, runtime.root / PACKAGE)
        for name in REPO_FILES:
            _place_file(REPO / name, runtime.root / name)
        runtime.staged.append(f"{REPO / PACKAGE} (copied always)")
        path = [str(runtime.root)]
        for site in _site_packages():
            if blocked_directory(site) is None:
                path.append(str(site))
                continue
            copy = directory / "site-packages" / str(len(path))
            _place(site, copy)
            path.append(str(copy))
            runtime.staged.append(f"{site} (behind {blocked_directory(site)})")
        if not _interpreter_readable():
            prefix = directory / "python"
            for original, relative in _interpreter_files():
                if original.is_dir():
                    _place(original, prefix / relative, exclude=("site-packages", "test", "idle_test"))
                else:
                    (prefix / relative).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    _place_file(original, prefix / relative)
            runtime.python = str(prefix / "bin" / Path(runtime.python).name)
            runtime.env["PYTHONHOME"] = str(prefix)
            runtime.env["LD_LIBRARY_PATH"] = str(prefix / "lib")  # before the binary's own (hidden) RUNPATH
            runtime.staged.append(f"the interpreter {sys.base_prefix} (behind {blocked_directory(sys.base_prefix)})")
        runtime.env.update(
            PYTHONPATH=os.pathsep.join(path),
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",  # the user can write nowhere here (a read-only root in the image)
        )
        _check(runtime)
    except BaseException:
        runtime.close()
        raise
    return runtime


def as_user(*argv: str) -> list[str]:
    """``argv`` run as ``UID`` with no group and no capability at all (as the image runs)."""
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all", *argv]


def _check(runtime: Runtime) -> None:
    """Import the exporter as the user, from the copy: a broken staging fails here, saying why."""
    code = (
        "import sys, exporter, exporter.cli, aiohttp, yaml, prometheus_client\n"
        f"assert exporter.__file__.startswith({str(runtime.root)!r}), exporter.__file__\n"
        "print(sys.version)"
    )
    done = subprocess.run(
        as_user(runtime.python, "-c", code),
        capture_output=True,
        text=True,
        timeout=60,
        env=runtime.environ(),
        cwd=runtime.root,
    )
    expected = sys.version  # the very interpreter under test, not another one found on the way
    if done.returncode != 0 or done.stdout.strip() != expected:
        raise AssertionError(
            f"the staged runtime does not run as uid {UID} (exit {done.returncode}, expected Python {expected}, "
            f"got {done.stdout.strip()!r}); staged: {runtime.staged}; stderr: {done.stderr[-2000:]}"
        )
