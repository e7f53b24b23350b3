"""SSH transport for device runs (paramiko).

Safety rules, all enforced here so every remote runner gets them:
- host keys are verified against a known_hosts file (RejectPolicy; an unknown or changed
  key is an error, never silently accepted);
- key authentication with an explicit identity file (or the user's agent/default keys);
- every step (connect, transfer, command, clean-up) has a timeout; a command that runs
  past its timeout is killed on the device;
- remote commands are built from argv lists with shlex quoting, never pasted strings;
- work happens in a unique remote temp dir that is removed in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgeseg.errors import EdgesegError

_PID_MARK = "edgeseg-pid:"
_MAX_CAPTURE = 4 * 1024 * 1024


class RemoteError(EdgesegError):
    """A device run failed: unreachable, refused, timed out, or the runner crashed."""


@dataclass(frozen=True)
class SSHTarget:
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, spec: str, port: int | None = None) -> "SSHTarget":
        """'user@host', 'user@host:2222', 'host', 'user@[::1]:2222'."""
        text = spec.strip()
        if not text or any(c.isspace() for c in text):
            raise EdgesegError(f"invalid SSH host {spec!r}", "use user@address[:port]")
        user = None
        if "@" in text:
            user, text = text.rsplit("@", 1)
            if not user:
                raise EdgesegError(f"invalid SSH host {spec!r}: empty user", "use user@address[:port]")
        p = port
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
        if m:
            host, pp = m.group(1), m.group(2)
        elif text.count(":") == 1:
            host, pp = text.split(":")
        else:
            host, pp = text, None
        if pp is not None:
            if not pp.isdigit():
                raise EdgesegError(f"invalid SSH port in {spec!r}", "use user@address:port with a numeric port")
            p = p or int(pp)
        if not host:
            raise EdgesegError(f"invalid SSH host {spec!r}", "use user@address[:port]")
        return cls(host=host, user=user, port=int(p or 22))

    def __str__(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{h}{':' + str(self.port) if self.port != 22 else ''}"


@dataclass
class Timeouts:
    connect: float = 15.0
    transfer: float = 300.0
    run: float = 900.0
    cleanup: float = 30.0

    @classmethod
    def from_profile(cls, profile, run: float | None = None) -> "Timeouts":
        a = profile.access
        return cls(connect=a.connect_timeout_s, transfer=a.transfer_timeout_s, run=run or a.run_timeout_s)


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def last_error_line(self) -> str:
        for stream in (self.stderr, self.stdout):
            for line in reversed(stream.splitlines()):
                if line.startswith("edgeseg-runner-error:"):
                    return line.split(":", 1)[1].strip()
        for stream in (self.stderr, self.stdout):
            lines = [x.strip() for x in stream.splitlines() if x.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}, no output"


def default_known_hosts() -> Path:
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


class SSHSession:
    """One authenticated, host-verified SSH connection to a device."""

    def __init__(self, target: SSHTarget | str, *, identity: str | os.PathLike | None = None,
                 known_hosts: str | os.PathLike | None = None, timeouts: Timeouts | None = None):
        self.target = SSHTarget.parse(target) if isinstance(target, str) else target
        self.identity = Path(os.path.expanduser(str(identity))) if identity else None
        self.known_hosts = Path(os.path.expanduser(str(known_hosts))) if known_hosts else default_known_hosts()
        self.timeouts = timeouts or Timeouts()
        self.client = None
        self._sftp = None
        self.debris: list[str] = []

    # ------------------------------------------------------------ connection
    def __enter__(self) -> "SSHSession":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        import paramiko

        t = self.target
        if not self.known_hosts.is_file():
            raise RemoteError(f"known_hosts file {self.known_hosts} does not exist",
                              f"verify the device's key fingerprint and add it (ssh-keyscan -p {t.port} {t.host} >> FILE), or pass --known-hosts")
        if self.identity is not None and not self.identity.is_file():
            raise RemoteError(f"identity file {self.identity} does not exist", "pass --identity with your private key")
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"cannot read known_hosts file {self.known_hosts} ({exc})", "fix or replace that file") from exc
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kw = dict(hostname=t.host, port=t.port, username=t.user, timeout=self.timeouts.connect,
                  banner_timeout=self.timeouts.connect, auth_timeout=self.timeouts.connect)
        if self.identity is not None:
            kw.update(key_filename=str(self.identity), allow_agent=False, look_for_keys=False)
        try:
            client.connect(**kw)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise RemoteError(f"host key of {t} does not match {self.known_hosts} (possible man-in-the-middle)",
                              "verify the device's new key out of band, then update known_hosts") from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise RemoteError(f"SSH key authentication to {t} failed", "check --identity and the device's ~/.ssh/authorized_keys") from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            raise RemoteError(f"cannot reach {t}: connection refused", "check the address, the port and that sshd runs on the device") from exc
        except (socket.timeout, TimeoutError) as exc:
            client.close()
            raise RemoteError(f"cannot reach {t}: no answer within {self.timeouts.connect:g} s",
                              "check the address and the network (or raise the profile's access.connect_timeout_s)") from exc
        except paramiko.SSHException as exc:
            client.close()
            msg = str(exc)
            if "not found in known_hosts" in msg:
                raise RemoteError(f"host key of {t} is not in {self.known_hosts}",
                                  f"verify its fingerprint, then add it: ssh-keyscan -p {t.port} {t.host} >> {self.known_hosts}") from exc
            if "key cannot be used" in msg.lower() or "private key" in msg.lower() or "not a valid" in msg.lower():
                raise RemoteError(f"cannot use identity file {self.identity} ({msg})", "pass an unencrypted OpenSSH/PEM private key") from exc
            raise RemoteError(f"SSH to {t} failed: {msg.splitlines()[0] if msg else type(exc).__name__}",
                              "check the device's sshd") from exc
        except OSError as exc:
            client.close()
            raise RemoteError(f"cannot reach {t}: {exc.strerror or exc}", "check the address and the network") from exc
        self.client = client

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def _transport(self):
        if self.client is None:
            raise RemoteError("SSH session is not connected", "internal: use `with SSHSession(...)`")
        tr = self.client.get_transport()
        if tr is None or not tr.is_active():
            raise RemoteError(f"SSH connection to {self.target} was lost", "check the device and the network, then rerun")
        return tr

    # ------------------------------------------------------------ commands
    def run(self, argv: list[str], *, step: str, timeout: float | None = None, cwd: str | None = None,
            check: bool = True, env: dict[str, str] | None = None) -> Completed:
        """Run argv on the device (quoted, never pasted); kill it if it exceeds `timeout`."""
        timeout = timeout or self.timeouts.run
        inner = shlex.join([str(a) for a in argv])
        if env:
            inner = shlex.join(["env", *[f"{k}={v}" for k, v in env.items()]]) + " " + inner
        script = f"echo {_PID_MARK}$$; " + (f"cd {shlex.quote(cwd)} && " if cwd else "") + f"exec {inner}"
        command = shlex.join(["sh", "-c", script])
        tr = self._transport()
        try:
            chan = tr.open_session(timeout=self.timeouts.connect)
        except Exception as exc:  # noqa: BLE001 - paramiko raises several types here
            raise RemoteError(f"cannot open a channel to {self.target} for {step} ({exc})", "check the device's sshd limits") from exc
        t0 = time.monotonic()
        out, err = bytearray(), bytearray()
        pid = None
        try:
            chan.settimeout(1.0)
            chan.exec_command(command)
            deadline = t0 + timeout
            while True:
                progressed = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    progressed = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    progressed = True
                if pid is None and b"\n" in out:
                    first, _, rest = bytes(out).partition(b"\n")
                    if first.startswith(_PID_MARK.encode()):
                        pid = first[len(_PID_MARK):].decode().strip()
                        out = bytearray(rest)
                if len(out) > _MAX_CAPTURE:
                    del out[: len(out) - _MAX_CAPTURE]
                if len(err) > _MAX_CAPTURE:
                    del err[: len(err) - _MAX_CAPTURE]
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    self._kill(pid)
                    raise RemoteError(f"remote step '{step}' timed out after {timeout:g} s on {self.target}",
                                      "raise --timeout, or check that the device is not stuck")
                if not progressed:
                    time.sleep(0.02)
                if not tr.is_active():
                    raise RemoteError(f"SSH connection to {self.target} was lost during '{step}'", "check the device, then rerun")
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        done = Completed([str(a) for a in argv], rc, out.decode(errors="replace"), err.decode(errors="replace"),
                         time.monotonic() - t0)
        if pid is None and done.stdout.startswith(_PID_MARK):  # the mark arrived with no newline yet consumed
            done.stdout = done.stdout.partition("\n")[2]
        if check and rc != 0:
            raise RemoteError(f"remote step '{step}' failed on {self.target}: {done.last_error_line()}",
                              "see the message; rerun with --debug for the command")
        return done

    def _kill(self, pid: str | None) -> None:
        if not pid or not pid.isdigit():
            return
        script = f"kill -TERM {pid} 2>/dev/null; sleep 1; kill -KILL {pid} 2>/dev/null; true"
        with contextlib.suppress(Exception):
            self.run(["sh", "-c", script], step="kill timed-out command", timeout=self.timeouts.cleanup, check=False)

    # ------------------------------------------------------------ files
    def sftp(self):
        if self._sftp is None:
            tr = self._transport()
            import paramiko

            try:
                self._sftp = paramiko.SFTPClient.from_transport(tr)
            except Exception as exc:  # noqa: BLE001
                raise RemoteError(f"SFTP is not available on {self.target} ({exc})", "enable the sftp subsystem in the device's sshd") from exc
        self._sftp.get_channel().settimeout(self.timeouts.transfer)
        return self._sftp

    def _transfer(self, what: str, fn, *args):
        try:
            return fn(*args)
        except (socket.timeout, TimeoutError) as exc:
            raise RemoteError(f"{what} timed out after {self.timeouts.transfer:g} s on {self.target}",
                              "check the link, or raise the profile's access.transfer_timeout_s") from exc
        except OSError as exc:
            raise RemoteError(f"{what} failed on {self.target}: {exc}", "check free space and permissions on the device") from exc

    def put(self, local: str | os.PathLike, remote: str) -> None:
        self._transfer(f"copying {Path(local).name} to the device", self.sftp().put, str(local), remote)

    def put_tree(self, local: str | os.PathLike, remote: str) -> None:
        """Copy a directory (e.g. an .mlpackage) recursively."""
        local = Path(local)
        sftp = self.sftp()
        self._transfer(f"creating {remote}", sftp.mkdir, remote)
        for root, dirs, files in os.walk(local):
            rel = Path(root).relative_to(local)
            rdir = posixpath.join(remote, *rel.parts)
            for d in dirs:
                self._transfer(f"creating {d}", sftp.mkdir, posixpath.join(rdir, d))
            for f in files:
                self.put(Path(root) / f, posixpath.join(rdir, f))

    def get(self, remote: str, local: str | os.PathLike) -> None:
        self._transfer(f"fetching {posixpath.basename(remote)} from the device", self.sftp().get, remote, str(local))

    def read_text(self, remote: str, limit: int = 64 * 1024 * 1024) -> str:
        def read():
            with self.sftp().open(remote, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise RemoteError(f"{remote} on the device is larger than {limit} bytes", "unexpected output size")
            return data.decode(errors="replace")

        return self._transfer(f"reading {posixpath.basename(remote)} from the device", read)

    def exists(self, remote: str) -> bool:
        try:
            self.sftp().stat(remote)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            return False

    def is_dir(self, remote: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp().stat(remote).st_mode)
        except OSError:
            return False

    # ------------------------------------------------------------ temp dir
    @contextlib.contextmanager
    def tempdir(self, base: str = "/tmp", prefix: str = "edgeseg-bench") -> Iterator[str]:
        """A unique directory on the device, removed afterwards whatever happens."""
        made = self.run(["mktemp", "-d", posixpath.join(base, f"{prefix}.XXXXXXXX")], step="create remote temp dir",
                        timeout=self.timeouts.cleanup)
        path = made.stdout.strip().splitlines()[-1] if made.stdout.strip() else ""
        if not path.startswith(posixpath.join(base, prefix + ".")) or "\n" in path or ".." in path:
            raise RemoteError(f"unexpected temp dir {path!r} from mktemp on {self.target}", "check the profile's access.workdir")
        failed = None
        try:
            yield path
        except BaseException as exc:
            failed = exc
            raise
        finally:
            try:
                self.run(["rm", "-rf", "--", path], step="remove remote temp dir", timeout=self.timeouts.cleanup)
            except RemoteError as exc:
                self.debris.append(path)
                if failed is None:
                    raise RemoteError(f"could not remove {path} on {self.target} ({exc.problem})",
                                      f"remove it by hand: ssh {self.target} rm -rf {shlex.quote(path)}") from exc
