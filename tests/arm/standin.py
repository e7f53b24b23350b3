"""An aarch64 board stand-in: an arm64 Debian rootfs run through qemu-user (binfmt_misc), with its
own OpenSSH server on 127.0.0.1 and the aarch64 onnxruntime/numpy wheels, so the ARM device path
(`edgeseg bench ... -d raspberry-pi-4 --host ...`) runs on a real aarch64 userland in every CI run.

    python tests/arm/standin.py build     # build once into the cache (or reuse it), with progress
    python tests/arm/standin.py serve     # start sshd, print the bench command, Ctrl-C to stop
    python tests/arm/standin.py status    # cache key, path, size; or why this machine cannot run it

The rootfs is cached under $EDGESEG_ARM_CACHE (default: the user cache dir, edgeseg/arm-standin),
keyed by its inputs: Debian suite, its Python, and the onnxruntime and numpy versions (by default
the host's, so x86 and aarch64 run the same runtime). Timings measured on it are emulated
(hundreds of times slower than a board) and are labelled so by the sshd's EDGESEG_EMULATED.

Only the standard library is used, so the script runs before the project is installed.
Needs root, qemu-user-static, binfmt-support, mmdebstrap (Debian packages).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

RECIPE_VERSION = 1  # bump when the build steps change: old caches are then left alone, a new one is built
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}  # the suite fixes the Python the chroot runs
PACKAGES = ["python3", "python3-venv", "openssh-server"]
USER = "edgeseg"
VENV = "/opt/edgeseg-venv"
WHEELS = "/var/cache/edgeseg-wheels"
SESSION_PREFIX = "edgeseg-standin-"
DEFAULT_CPU = "cortex-a72"  # the Raspberry Pi 4's core: qemu reports its feature set
EMULATED_MARK = "qemu-user aarch64 ({cpu}), edgeseg arm stand-in"
STEP_TIMEOUT_S = 3600  # mmdebstrap on 2 busy cores takes 9-20 min; a hung mirror must still end
REPO_ROOT = Path(__file__).resolve().parents[2]

Log = Callable[[str], None]

# A Cortex-A72-style /proc/cpuinfo: qemu-user passes the host's x86 one through otherwise, and
# onnxruntime's cpuinfo library (and the host /sys it would probe) then crash under emulation.
_CPUINFO_CORE = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""

# Runs inside a fresh mount + PID namespace: the mounts vanish with the namespace, and killing the
# namespace's first process kills every process in it (sshd, its sessions, runners), so nothing
# can outlive a test run, even one that is interrupted.
_NAMESPACE_SCRIPT = r"""
set -eu
R="$1"; CPU="$2"; MARK="$3"; shift 3
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/etc/edgeseg-standin/cpuinfo" "$R/proc/cpuinfo"
mount --bind /dev "$R/dev"
exec chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QEMU_CPU="$CPU" EDGESEG_EMULATED="$MARK" "$@"
"""


class Unavailable(Exception):
    """This machine cannot run the stand-in; the message says why (a test skip reason)."""


class BuildError(Exception):
    """The build was possible but failed; the message says which step and why."""


# ---------------------------------------------------------------- inputs and cache

def _host_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - not installed
        return None


@dataclass(frozen=True)
class Recipe:
    suite: str = "bookworm"
    onnxruntime: str = ""
    numpy: str = ""
    mirror: str = "http://deb.debian.org/debian"

    @classmethod
    def default(cls) -> "Recipe":
        ort = os.environ.get("EDGESEG_ARM_ORT") or _host_version("onnxruntime")
        np_ = os.environ.get("EDGESEG_ARM_NUMPY") or _host_version("numpy")
        if not ort or not np_:
            raise Unavailable("onnxruntime/numpy are not installed on the host to pick matching aarch64 wheels "
                              "(install the project first, or set EDGESEG_ARM_ORT and EDGESEG_ARM_NUMPY)")
        return cls(suite=os.environ.get("EDGESEG_ARM_SUITE", "bookworm"), onnxruntime=ort, numpy=np_,
                   mirror=os.environ.get("EDGESEG_ARM_MIRROR", cls.mirror))

    @property
    def python(self) -> str:
        try:
            return SUITE_PYTHON[self.suite]
        except KeyError:
            raise Unavailable(f"unknown Debian suite {self.suite!r} for the stand-in (known: {', '.join(SUITE_PYTHON)})") from None

    def key(self) -> str:
        # the mirror is not part of the key: any Debian mirror gives the same suite
        return f"{self.suite}-py{self.python}-ort{self.onnxruntime}-np{self.numpy}-r{RECIPE_VERSION}"


def cache_root() -> Path:
    env = os.environ.get("EDGESEG_ARM_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        root = Path(base) / "edgeseg" / "arm-standin"
    root = root.resolve()
    if root == REPO_ROOT or REPO_ROOT in root.parents:
        raise Unavailable(f"the stand-in cache {root} is inside the git repository (set EDGESEG_ARM_CACHE outside {REPO_ROOT})")
    return root


@dataclass
class Build:
    root: Path  # <cache>/<key>; the chroot is root/rootfs
    recipe: Recipe
    seconds: float = 0.0
    size_mb: float = 0.0
    reused: bool = False
    built_at: str = ""
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    def describe(self) -> str:
        how = "reused" if self.reused else f"built in {self.seconds / 60:.1f} min"
        return f"arm64 stand-in {self.root.name} ({how}, {self.size_mb:.0f} MB) at {self.root}"


def _read_build(root: Path, recipe: Recipe) -> Build | None:
    info = root / "standin.json"
    if not info.is_file() or not (root / "rootfs" / "usr" / "sbin" / "sshd").exists():
        return None
    try:
        d = json.loads(info.read_text())
        return Build(root=root, recipe=recipe, seconds=float(d["seconds"]), size_mb=float(d["size_mb"]), reused=True,
                     built_at=str(d.get("built_at", "")), steps={k: float(v) for k, v in d.get("steps", {}).items()})
    except (ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _lock(path: Path, exclusive: bool, log: Log, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process {what} ({path})")
            fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- machine checks

def _binfmt_ready(fix: bool) -> str | None:
    """None when qemu-aarch64 is registered with the F flag; else why not (fixing it when root)."""
    mnt = Path("/proc/sys/fs/binfmt_misc")
    if not (mnt / "status").exists():
        if not fix:
            return "binfmt_misc is not mounted"
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(mnt)], capture_output=True, timeout=30, check=False)
        if not (mnt / "status").exists():
            return "binfmt_misc is not available (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc failed)"
    entry = mnt / "qemu-aarch64"
    if not entry.exists() and fix and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, timeout=60, check=False)
    if not entry.exists():
        return "no qemu-aarch64 binfmt_misc entry (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return "the qemu-aarch64 binfmt_misc entry is disabled (update-binfmts --enable qemu-aarch64)"
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        return "the qemu-aarch64 binfmt_misc entry lacks the F (fix-binary) flag, so the interpreter is missing inside a chroot"
    return None


def why_unavailable(building: bool = False, fix: bool = True) -> str | None:
    """A one-line reason this machine cannot run (or build) the stand-in, or None."""
    if not sys.platform.startswith("linux"):
        return "the arm64 stand-in needs Linux (qemu-user through binfmt_misc)"
    if os.geteuid() != 0:
        return "the arm64 stand-in needs root (chroot, mounts, namespaces)"
    missing = [t for t in ("unshare", "chroot", "mount", "ssh-keygen") if shutil.which(t) is None]
    if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        missing.append("qemu-aarch64-static (apt-get install qemu-user-static binfmt-support)")
    if building and shutil.which("mmdebstrap") is None:
        missing.append("mmdebstrap (apt-get install mmdebstrap)")
    if missing:
        return "missing on this machine: " + ", ".join(missing)
    return _binfmt_ready(fix)


# ---------------------------------------------------------------- running things

def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the Python process that started it dies hard."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _in_chroot_argv(rootfs: Path, cmd: list[str], cpu: str = DEFAULT_CPU) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--",
            "sh", "-c", _NAMESPACE_SCRIPT, "standin", str(rootfs), cpu, EMULATED_MARK.format(cpu=cpu), *cmd]


def _run(argv: list[str], step: str, log: Log, timeout: float = STEP_TIMEOUT_S, stream: bool = False) -> str:
    """Run a build step; stream its output lines to `log` when asked; BuildError with its tail on failure."""
    tail: list[str] = []
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=_die_with_parent) as proc:
        deadline = time.monotonic() + timeout
        try:
            for line in proc.stdout:
                line = line.rstrip()
                tail = (tail + [line])[-30:]
                if stream and line:
                    log(f"    {line}")
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
            raise
    if proc.returncode != 0:
        raise BuildError(f"{step} failed (exit {proc.returncode}): " + " | ".join(x for x in tail[-5:] if x))
    return "\n".join(tail)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace (never delete through one)."""
    p = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == p or mp.startswith(p + "/"):
                found.append(mp)
    return found


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    mounts = _mounts_under(path)
    if mounts:  # a bind of /dev under it would take the host's device nodes with it
        raise BuildError(f"refusing to delete {path}: still mounted there: {', '.join(mounts)}")
    shutil.rmtree(path)


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sxm", str(path)], capture_output=True, text=True, timeout=600, check=False).stdout
    try:
        return float(out.split()[0])
    except (IndexError, ValueError):
        return 0.0


# ---------------------------------------------------------------- build

def _manylinux_platforms() -> list[str]:
    # pip matches platform tags exactly: list every glibc level bookworm (2.36) satisfies
    return ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in range(17, 37)]


def _build_steps(root: Path, recipe: Recipe, log: Log, steps: dict[str, float]) -> None:
    rootfs = root / "rootfs"

    def step(name: str, fn: Callable[[], None]) -> None:
        log(f"[stand-in] {name} ...")
        t0 = time.monotonic()
        fn()
        steps[name] = round(time.monotonic() - t0, 1)
        log(f"[stand-in] {name}: {steps[name]:.0f} s")

    def debootstrap() -> None:
        # mmdebstrap runs in its own mount namespace so an interrupted run cannot leave mounts behind
        _run(["unshare", "--mount", "--propagation", "private", "--", "mmdebstrap", "--arch=arm64", "--variant=minbase",
              "--include=" + ",".join(PACKAGES), recipe.suite, str(rootfs), recipe.mirror],
             f"mmdebstrap {recipe.suite} arm64", log, stream=True)

    def configure() -> None:
        etc = rootfs / "etc" / "edgeseg-standin"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "cpuinfo").write_text("".join(_CPUINFO_CORE.format(i=i) for i in range(4)))
        cpu = rootfs / "sys" / "devices" / "system" / "cpu"  # host /sys is never mounted: onnxruntime crashes on it
        cpu.mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present", "online"):
            (cpu / name).write_text("0-3\n")
        (etc / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1))
        for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()  # never shared between caches: each run gets a fresh host key
        (rootfs / "run" / "sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        # a locked account ('!') refuses key login when sshd runs without PAM; '*' means "no password"
        _run(_in_chroot_argv(rootfs, ["sh", "-c", f"useradd -m -s /bin/sh {USER} && usermod -p '*' {USER}"]),
             "create the device user", log)
        _run(_in_chroot_argv(rootfs, ["python3", "-m", "venv", "--without-pip", VENV]), "create the device venv", log)

    def wheels() -> None:
        # the host's pip resolves and installs the aarch64 wheels (no compiler, no pip under emulation)
        site = rootfs / VENV.lstrip("/") / "lib" / f"python{recipe.python}" / "site-packages"
        if not site.is_dir():
            raise BuildError(f"the device venv has no {site.relative_to(rootfs)}: the suite's Python is not {recipe.python}")
        argv = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--only-binary=:all:",
                "--target", str(site), "--python-version", recipe.python, "--implementation", "cp",
                "--abi", "cp" + recipe.python.replace(".", ""), "--abi", "abi3", "--abi", "none"]
        for plat in _manylinux_platforms():
            argv += ["--platform", plat]
        argv += [f"onnxruntime=={recipe.onnxruntime}", f"numpy=={recipe.numpy}"]
        _run(argv, "download and install the aarch64 onnxruntime/numpy wheels", log, timeout=1800)
        (site / "bin").exists() and shutil.rmtree(site / "bin")  # console scripts point at the host's Python
        wrapper = rootfs / "usr" / "local" / "bin" / "python3"
        # a symlink to the venv interpreter would lose the venv (sys.prefix follows argv[0]); exec keeps it
        wrapper.write_text(f'#!/bin/sh\nexec {VENV}/bin/python3 "$@"\n')
        wrapper.chmod(0o755)

    def smoke() -> None:
        code = ("import platform, sys, numpy, onnxruntime as ort; "
                "print(platform.machine(), sys.version.split()[0], ort.__version__, numpy.__version__)")
        out = _run(_in_chroot_argv(rootfs, ["python3", "-c", code]), "import onnxruntime under emulation", log, timeout=600)
        machine, py, ort, np_ = out.strip().splitlines()[-1].split()
        if machine != "aarch64" or not py.startswith(recipe.python + ".") or ort != recipe.onnxruntime or np_ != recipe.numpy:
            raise BuildError(f"the stand-in runs {machine} Python {py} onnxruntime {ort} numpy {np_}, expected aarch64 "
                             f"Python {recipe.python} onnxruntime {recipe.onnxruntime} numpy {recipe.numpy}")
        log(f"[stand-in] device check: {machine}, Python {py}, onnxruntime {ort}, numpy {np_}")

    step(f"mmdebstrap {recipe.suite} arm64 ({', '.join(PACKAGES)})", debootstrap)
    step("configure the device (user, venv, cpuinfo)", configure)
    step(f"install onnxruntime {recipe.onnxruntime} and numpy {recipe.numpy} (aarch64 wheels)", wheels)
    step("smoke test", smoke)


def ensure_built(recipe: Recipe | None = None, log: Log = print, *, rebuild: bool = False) -> Build:
    """The cached stand-in for `recipe`, building it first when missing (Unavailable / BuildError otherwise)."""
    reason = why_unavailable(building=False)
    if reason:
        raise Unavailable(reason)
    recipe = recipe or Recipe.default()
    base = cache_root()
    root = base / recipe.key()
    lock = base / f".{recipe.key()}.lock"
    if not rebuild:  # shared: running stand-ins hold it too, and reusing must not wait for them
        with _lock(lock, False, log, "building the stand-in"):
            found = _read_build(root, recipe)
            if found:
                return found
    with _lock(lock, True, log, "using or building the stand-in"):
        found = None if rebuild else _read_build(root, recipe)
        if found:
            return found
        reason = why_unavailable(building=True)
        if reason:
            raise Unavailable(reason)
        partial = base / f".{recipe.key()}.partial-{os.getpid()}"
        for stale in base.glob(f".{recipe.key()}.partial-*"):  # from a build that was killed
            _remove_tree(stale)
        partial.mkdir(parents=True)
        steps: dict[str, float] = {}
        t0 = time.monotonic()
        log(f"[stand-in] building {recipe.key()} in {base} (about 10-20 min on 2 cores; cached afterwards)")
        try:
            _build_steps(partial, recipe, log, steps)
            seconds = time.monotonic() - t0
            size = _du_mb(partial)
            info = {"recipe": asdict(recipe), "seconds": round(seconds, 1), "size_mb": size, "steps": steps,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (partial / "standin.json").write_text(json.dumps(info, indent=1))
            if root.exists():
                _remove_tree(root)  # only with rebuild=True, or a broken entry without standin.json
            partial.rename(root)
        except BaseException:
            with contextlib.suppress(Exception):
                _remove_tree(partial)
            raise
        log(f"[stand-in] built in {seconds / 60:.1f} min, {size:.0f} MB")
        return Build(root=root, recipe=recipe, seconds=seconds, size_mb=size, steps=steps, built_at=info["built_at"])


# ---------------------------------------------------------------- serve

@dataclass
class Device:
    """A running stand-in: what `edgeseg bench --host ... -i ... --known-hosts ...` needs."""

    port: int
    identity: Path
    known_hosts: Path
    rootfs: Path
    pid_namespace: str = ""  # every process of this stand-in lives in it (sshd, sessions, runners)
    user: str = USER
    address: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def host_path(self, device_path: str) -> Path:
        """Where a path on the device lives on this machine (to check for debris)."""
        return self.rootfs / device_path.lstrip("/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeseg-standin", "-f", str(path)],
                   check=True, timeout=60, capture_output=True)
    return Path(str(path) + ".pub").read_text().strip()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def processes_in(namespace: str) -> list[int]:
    """Processes in a stand-in's PID namespace (there must be none after teardown)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(p / "ns" / "pid") == namespace:
                    pids.append(int(p.name))
    return pids


def _namespace_of(proc: subprocess.Popen, timeout: float = 10) -> str:
    """The PID namespace of unshare's forked child (unshare itself stays in ours)."""
    own = os.readlink("/proc/self/ns/pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                ns = os.readlink(f"/proc/{kids[0]}/ns/pid")
                if ns != own:
                    return ns
        time.sleep(0.05)
    raise BuildError("the stand-in's namespace did not start")


def _wait_banner(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BuildError(f"the stand-in's sshd exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(10)
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.3)
    raise BuildError(f"the stand-in's sshd did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


@contextlib.contextmanager
def serve(build: Build, cpu: str = DEFAULT_CPU, log: Log = print, start_timeout: float = 120) -> Iterator[Device]:
    """Start the chroot's sshd on a free loopback port with a fresh host key and client key; stop
    everything (processes, mounts, session files) on exit, whatever happened."""
    rootfs = build.rootfs
    run_dir = rootfs / "run"
    for stale in run_dir.glob(SESSION_PREFIX + "*"):  # sessions whose owner died without cleaning up
        with contextlib.suppress(ValueError):
            if not _pid_alive(int(stale.name[len(SESSION_PREFIX):].split("-")[0])):
                _remove_tree(stale)
    with _lock(build.root.parent / f".{build.root.name}.lock", False, log, "rebuilding the stand-in"):
        session = run_dir / f"{SESSION_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        inside = "/" + str(session.relative_to(rootfs))
        client = Path(tempfile.mkdtemp(prefix="edgeseg-standin-client-"))
        proc, namespace = None, ""
        try:
            session.mkdir(mode=0o755)
            host_pub = _keygen(session / "host_ed25519")
            (session / "authorized_keys").write_text(_keygen(client / "id_ed25519") + "\n")
            (session / "authorized_keys").chmod(0o644)
            port = _free_port()
            (session / "sshd_config").write_text(textwrap.dedent(f"""\
                Port {port}
                ListenAddress 127.0.0.1
                HostKey {inside}/host_ed25519
                PidFile {inside}/sshd.pid
                AuthorizedKeysFile {inside}/authorized_keys
                AllowUsers {USER}
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin no
                UsePAM no
                StrictModes no
                MaxStartups 20
                LogLevel ERROR
                Subsystem sftp internal-sftp
                SetEnv QEMU_CPU={cpu} "EDGESEG_EMULATED={EMULATED_MARK.format(cpu=cpu)}"
                """))
            log_file = open(client / "sshd.log", "wb")
            proc = subprocess.Popen(_in_chroot_argv(rootfs, ["/usr/sbin/sshd", "-D", "-e", "-f", f"{inside}/sshd_config"], cpu),
                                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)  # Ctrl-C reaches Python, not sshd
            log_file.close()
            namespace = _namespace_of(proc)
            try:
                _wait_banner(port, proc, start_timeout)
            except BuildError as exc:
                raise BuildError(f"{exc}: {(client / 'sshd.log').read_text(errors='replace').strip()[-300:]}") from None
            kind, blob = host_pub.split()[:2]
            (client / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
            log(f"[stand-in] sshd up on 127.0.0.1:{port} (emulated {cpu})")
            yield Device(port=port, identity=client / "id_ed25519", known_hosts=client / "known_hosts", rootfs=rootfs,
                         pid_namespace=namespace)
        finally:
            if proc is not None:
                _stop(proc, namespace)
            left = processes_in(namespace) if namespace else []
            with contextlib.suppress(Exception):
                _remove_tree(session)
            shutil.rmtree(client, ignore_errors=True)
            if left:
                raise BuildError(f"processes still run in the stand-in after teardown: {left}")


def _stop(proc: subprocess.Popen, namespace: str) -> None:
    """SIGTERM to unshare: --kill-child then SIGKILLs the namespace's first process, and with it the namespace."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    deadline = time.monotonic() + 15  # the namespace's processes die asynchronously after its init
    while time.monotonic() < deadline:
        if not namespace or not processes_in(namespace):
            break
        time.sleep(0.1)


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="standin.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the stand-in into the cache, or reuse it")
    b.add_argument("--rebuild", action="store_true", help="build again even when cached")
    b.add_argument("--if-possible", action="store_true",
                   help="exit 0 with the reason when this machine cannot run it (tests then skip with that reason)")
    sub.add_parser("status", help="cache key, path and size, or why it cannot run here")
    s = sub.add_parser("serve", help="start the stand-in's sshd and wait for Ctrl-C")
    s.add_argument("--cpu", default=DEFAULT_CPU, help="qemu CPU model (cortex-a72 ~ Pi 4, cortex-a76 ~ RK3588/Pi 5)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        if args.cmd == "status":
            recipe = Recipe.default()
            found = _read_build(cache_root() / recipe.key(), recipe)
            print(found.describe() if found else f"not built: {cache_root() / recipe.key()}")
            reason = why_unavailable(building=found is None, fix=False)
            print(f"cannot run here: {reason}" if reason else "this machine can run it")
            return 0
        # Ctrl-C even when started in the background (where SIGINT arrives ignored), and SIGTERM, clean up too
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        build = ensure_built(log=log, rebuild=getattr(args, "rebuild", False))
        log(f"[stand-in] {build.describe()}")
        if args.cmd == "serve":
            with serve(build, cpu=args.cpu, log=log) as dev:
                print(f"\nedgeseg bench MODEL -d raspberry-pi-4 --host {dev.host} -i {dev.identity} "
                      f"--known-hosts {dev.known_hosts} --warmup 1 -n 3\n(timings are emulated; Ctrl-C stops the stand-in)",
                      flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
        return 0
    except Unavailable as exc:
        print(f"{'note' if getattr(args, 'if_possible', False) else 'error'}: arm64 stand-in unavailable: {exc}", file=sys.stderr)
        return 0 if getattr(args, "if_possible", False) else 2
    except BuildError as exc:
        print(f"error: arm64 stand-in: {exc} (see the output above; rerun with --rebuild)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
