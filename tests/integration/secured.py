"""Helpers of the connection tests (contract section 12): certificates made with openssl, a
redis-server of a test's own with an ACL user (and TLS), and the run of a command whose
every output is kept to be searched for secrets."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all
    signed by it (PEM files); the client key is encrypted with ``key_password``."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    key_password: str

    @classmethod
    def make(cls, directory: Path, key_password: str, name: str = "test") -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        p = {n: directory / f"{name}-{n}" for n in (
            "ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "client.key",
            "client.csr", "client.pem", "san.ext")}
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["ca.key"]),
            "-out", str(p["ca.pem"]), "-days", "30", "-subj", f"/CN={name} CA")
        p["san.ext"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["server.key"]), "-out",
            str(p["server.csr"]), "-subj", "/CN=localhost")
        run("x509", "-req", "-in", str(p["server.csr"]), "-CA", str(p["ca.pem"]), "-CAkey",
            str(p["ca.key"]), "-CAcreateserial", "-out", str(p["server.pem"]), "-days", "30",
            "-extfile", str(p["san.ext"]))
        run("req", "-newkey", "rsa:2048", "-keyout", str(p["client.key"]), "-passout",
            f"pass:{key_password}", "-out", str(p["client.csr"]), "-subj", "/CN=streamfeat")
        run("x509", "-req", "-in", str(p["client.csr"]), "-CA", str(p["ca.pem"]), "-CAkey",
            str(p["ca.key"]), "-CAcreateserial", "-out", str(p["client.pem"]), "-days", "30")
        return cls(directory, p["ca.pem"], p["server.pem"], p["server.key"], p["client.pem"],
                   p["client.key"], key_password)


class AclRedis:
    """A redis-server of this test alone: the default user off, ``user`` with ``password``
    allowed everything; with ``certs``, TLS only (client certificates required)."""

    def __init__(self, tmp_path: Path, user: str, password: str,
                 certs: Certificates | None = None) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed; deploy/local/up installs it"
        self.dir, self.user, self.password, self.certs = tmp_path, user, password, certs
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [server, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(tmp_path), "--user", "default", "off",
                "--user", user, "on", f">{password}", "~*", "&*", "+@all"]
        if certs is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(certs.server_cert),
                     "--tls-key-file", str(certs.server_key),
                     "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes"]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, password: str | None = None, *, client_cert: bool = True,
            ca: Path | None = None) -> str:
        """The URL of the user (``password``: another one), with the TLS files."""
        pw = self.password if password is None else password
        if self.certs is None:
            return f"redis://{self.user}:{pw}@{self.address}/0"
        c = self.certs
        query = f"ssl_ca_certs={ca or c.ca}"
        if client_cert:
            query += (f"&ssl_certfile={c.client_cert}&ssl_keyfile={c.client_key}"
                      f"&ssl_password={c.key_password}")
        return f"rediss://{self.user}:{pw}@{self.address}/0?{query}"

    def __enter__(self) -> AclRedis:
        import redis as redis_lib

        from streamfeat.sinks.redis import connect

        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            client = connect(self.url())
            try:
                with contextlib.suppress(redis_lib.RedisError):
                    if client.ping():
                        return self
            finally:
                client.close()
            time.sleep(0.1)
        self.__exit__()
        raise AssertionError(f"private redis-server did not start: {self.args}")

    def __exit__(self, *_exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


@dataclass(frozen=True)
class Ran:
    """A finished command: its exit status, its output (stdout and stderr) and its time."""

    code: int
    out: str
    err: str
    seconds: float


def streamfeat(*args: str, env: dict[str, str], timeout_s: float = 120) -> Ran:
    """``streamfeat ARGS``, run to its end."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streamfeat.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@dataclass(frozen=True)
class SecureStack:
    """``deploy/local/up`` with a SASL_SSL listener and a TLS Redis, in a directory of its own
    (see :meth:`start`): what it printed, and the passwords of ``tls/secrets.env``."""

    dir: Path
    env: dict[str, str]  # the environment up and down ran with
    plaintext: str  # the same broker's PLAINTEXT listener: the tests' own clients
    sasl_ssl: str  # bootstrap of the SASL_SSL listener
    kafka_config: Path  # its --kafka-config (${NAME} references to the secrets)
    redis_tls: str  # rediss:// URL of the ACL user, TLS files (${NAME} references)
    secrets: dict[str, str]  # STREAMFEAT_KAFKA_PASSWORD, ..._REDIS_PASSWORD, ..._KEY_PASSWORD

    @classmethod
    def start(cls, directory: Path) -> SecureStack:
        """Start it; the Kafka jars are shared with the session's broker when there."""
        for libs in (ROOT / ".local" / "kafka").glob("libs-*"):
            if (libs / ".complete").exists():
                (directory / "kafka").mkdir(parents=True, exist_ok=True)
                link = directory / "kafka" / libs.name
                if not link.exists():
                    link.symlink_to(libs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFEAT_")}
        env.update(STREAMFEAT_LOCAL_DIR=str(directory), KAFKA_HEAP="384m",
                   KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                   KAFKA_SASL_SSL_PORT=str(free_port()), REDIS_PORT=str(free_port()),
                   REDIS_TLS_PORT=str(free_port()))
        done = subprocess.run([str(ROOT / "deploy" / "local" / "up")], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            cls.stop_env(env)
            raise AssertionError(f"deploy/local/up (secured) failed:\n{done.stderr[-3000:]}")
        said = dict(line.split("=", 1) for line in done.stdout.splitlines()
                    if line.startswith("STREAMFEAT_"))
        secrets = dict(line.split("=", 1) for line in
                       Path(said["STREAMFEAT_SECRETS"]).read_text().splitlines() if "=" in line)
        return cls(directory, env, said["STREAMFEAT_KAFKA"], said["STREAMFEAT_KAFKA_SASL_SSL"],
                   Path(said["STREAMFEAT_KAFKA_CONFIG_SASL_SSL"]), said["STREAMFEAT_REDIS_TLS"],
                   secrets)

    @staticmethod
    def stop_env(env: dict[str, str]) -> None:
        subprocess.run([str(ROOT / "deploy" / "local" / "down")], env=env,
                       capture_output=True, timeout=120, check=False)

    def stop(self) -> None:
        self.stop_env(self.env)
