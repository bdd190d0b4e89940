"""A local TorchServe for a run's model archives: config.properties, start, health, stop.

The run's `serving/` folder holds `config.properties`, `log4j2.xml`, `metrics.yaml`, `model-store/` (the .mar
files), `key_file.json` (TorchServe's token file, readable by the owner only), `logs/` and `server.json` (pid,
addresses) while a server runs. Addresses are loopback by default, token authorization is on, the
model-management API stays off, metrics are in Prometheus format. Each start makes a private folder (mode
0700, under the temporary directory) for what TorchServe runs from: the management API's Unix socket (no
address of any network reaches it, see `manage`), `model-store/` (the checked copies of the archives
TorchServe serves, see serving/archive.py's `stage_archives`) and `tmp/` (TMPDIR and java.io.tmpdir, where
TorchServe unpacks the models, which its workers import from, and puts its worker sockets). TorchServe runs in
that folder, not in the serving folder: its launcher puts the working directory first on the Java frontend's
classpath (and `python -m` on the launcher's sys.path), so whoever can write the runs folder could otherwise
have the server load their code (see `start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkube.serving.archive import archive_run, model_names, stage_archives
from mlkube.serving.client import Client, auth_header, read_key, unix_request
from mlkube.serving.handlers.base import METRICS, WORKER_CPUS_ENV
from mlkube.serving.plugin import METADATA_ENV, plugin_jar
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import Run, atomic_write_json, atomic_write_text, now_iso, read_json
from mlkube.trainer.signing import KEY_ENV, key_file
from mlkube.trainer.spec import ServeSpec, parse_spec

SERVER_JSON = "server.json"
KEY_FILE = (
    "key_file.json"  # in the serving folder; TorchServe writes it through a link in its working directory
)
SOCKET_PATH_MAX = 107  # bytes of a Unix socket path (sun_path holds 108 with the NUL)
PRIVATE_PREFIX = "mlkube-ts-"
MANAGEMENT_SOCKET = "management.sock"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120
RESPONSE_TIMEOUT_S = 120


@dataclass
class Server:
    """A TorchServe started for one run. `stop()` ends it (its whole process group)."""

    folder: Path
    host: str
    ports: dict[str, int]  # inference, metrics (management is on `management_socket`)
    models: list[str]
    token_auth: bool
    pid: int
    tmpdir: str  # java.io.tmpdir: tmp/ in the private folder
    management_socket: str = ""  # the management API's Unix socket, in the server's private folder
    started: str = field(default_factory=now_iso)
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    log_start: int = field(
        default=0, repr=False, compare=False
    )  # where this start's lines begin in model_log.log

    def url(self, api: str) -> str:
        """Base URL of `api`: inference or metrics (the management API has no URL: see `manage`)."""
        return f"http://{self.host}:{self.ports[api]}"

    def manage(
        self, method: str, path: str, key: str = "management", params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """A call to the management API over its Unix socket (status, parsed JSON body), with the `key` key
        from the token file (`API` renews keys)."""
        headers = auth_header(self.token_file, key)
        return unix_request(self.management_socket, method, path, headers, params)

    @property
    def token_file(self) -> Path | None:
        return self.folder / KEY_FILE if self.token_auth else None

    def predict(self, model: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        return Client(self.url("inference"), self.token_file).predict(model, payload)

    def example(self, model: str) -> Path:
        """A valid example request for `model` (written at start), for a first prediction or the curl line."""
        return self.folder / "examples" / f"{model}.json"

    def stop(self, timeout: float = 30) -> None:
        """Terminate the process group (launcher, Java frontend, Python workers); kill it after `timeout`
        s."""
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive():
                os.killpg(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        # What TorchServe's own --stop removes (the keys).
        for path in (self.folder / SERVER_JSON, self.folder / KEY_FILE):
            path.unlink(missing_ok=True)
        # The private folder: the management socket, the archives' copies and the models TorchServe unpacked.
        for private in {Path(self.tmpdir).parent, Path(self.management_socket).parent}:
            if private != self.folder and private.name.startswith(PRIVATE_PREFIX):
                shutil.rmtree(private, ignore_errors=True)

    def alive(self) -> bool:
        """Whether any process of the server's group still runs."""
        if self.process is not None:
            self.process.poll()  # reaps our launcher if it ended, so that its zombie does not count
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def record(self) -> dict[str, Any]:
        """What server.json keeps, so that another process can find and stop this server."""
        return {
            "folder": str(self.folder),
            "host": self.host,
            "ports": self.ports,
            "models": self.models,
            "token_auth": self.token_auth,
            "pid": self.pid,
            "tmpdir": self.tmpdir,
            "management_socket": self.management_socket,
            "started": self.started,
        }


# --------------------------------------------------------------------------------------------- start
def serve_run(
    run: Run | Path,
    serve: ServeSpec | None = None,
    names: list[str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Server:
    """Archive the run's models (those not yet archived), start TorchServe on them and wait until every model
    answers. `serve` defaults to the run's own spec; `names` to every model of the run."""
    run = run if isinstance(run, Run) else Run.open(run)
    # Archiving writes the run's serving folder: not while another process writes the run (a half-written
    # model must not be archived); the lock is released once the server is ready (serving only reads).
    held = bool(run.writer_fds)
    run.acquire("serve")
    try:
        serve = serve or run_serve_spec(run)
        names = model_names(run, names)
        archive_run(run, names)
        server = start(run, serve, names)  # checks the archives (stage_archives)
        try:
            wait_ready(server, timeout)
        except BaseException:
            server.stop()
            raise
    finally:
        if not held:
            run.release()
    return server


def run_serve_spec(run: Run) -> ServeSpec:
    return parse_spec(run.spec_file.read_text(), source=str(run.spec_file)).serve


def start(run: Run, serve: ServeSpec, names: list[str]) -> Server:
    """Check the archives and copy them into a new private folder (`stage_archives`: MlkubeError naming the
    archive and the file it refuses), write the configuration and start TorchServe in its own process group
    (returns at once)."""
    run = Run(run.path.resolve())  # TorchServe runs in a private folder: every path it gets is absolute
    folder = run.serving
    refuse_if_running(folder)
    ports = {"inference": serve.inference_port, "metrics": serve.metrics_port}
    for api, port in ports.items():
        check_port_free(serve.host, port, api)
    agent = plugin_jar()  # before anything is written: it may refuse (no javac to build it)
    for sub in ("logs", "examples"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    write_examples(run, names, folder / "examples")
    atomic_write_text(folder / "metrics.yaml", metrics_yaml())
    private = private_folder()
    try:
        if serve.token_auth:
            key_file_link(folder / KEY_FILE, private / KEY_FILE)
        store = private / "model-store"
        stage_archives(run, names, store)
        tmpdir = private / "tmp"
        tmpdir.mkdir()
        management = private / MANAGEMENT_SOCKET
        metadata = private / "oip"  # the models' OIP metadata: written by the workers, read by the agent
        metadata.mkdir()
        config = atomic_write_text(
            folder / "config.properties",
            config_properties(run, serve, names, tmpdir, management, store, agent=agent),
        )
        log_config = atomic_write_text(folder / "log4j2.xml", log4j2_xml())
        env = {
            **os.environ,
            "TMPDIR": str(tmpdir),
            "LOG_LOCATION": str(folder / "logs"),
            "METRICS_LOCATION": str(folder / "logs"),
            KEY_ENV: str(key_file()),  # the workers check each model card's signature with it
            METADATA_ENV: str(metadata),
        }
        env.setdefault("OMP_NUM_THREADS", str(worker_threads(len(names) * serve.workers)))
        env.setdefault(WORKER_CPUS_ENV, str(worker_threads(serve.workers)))
        command = [
            sys.executable,
            "-m",
            "ts.model_server",
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config),
            "--log-config",
            str(log_config),
            "--model-store",
            str(store),
        ]
        model_log = folder / "logs" / "model_log.log"  # TorchServe appends to it across starts
        log_start = model_log.stat().st_size if model_log.is_file() else 0
        with open(
            os.open(folder / "logs" / "torchserve.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
        ) as out:
            # umask 077: the key file, logs and unpacked models are the owner's only. The working directory is
            # the private folder: TorchServe's launcher starts Java with `-cp .:<frontend jars>` and runs with
            # `python -m` (the working directory first on sys.path), so in the serving folder a .class or .py
            # that anyone who can write the runs volume drops there would run in the server.
            process = subprocess.Popen(
                command,
                cwd=private,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                umask=0o077,
            )
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)  # nothing of a start that did not happen stays behind
        if serve.token_auth:
            (folder / KEY_FILE).unlink(missing_ok=True)
        raise
    server = Server(
        folder,
        serve.host,
        ports,
        names,
        serve.token_auth,
        process.pid,
        str(tmpdir),
        str(management),
        process=process,
        log_start=log_start,
    )
    try:
        atomic_write_json(folder / SERVER_JSON, server.record())
    except BaseException:
        server.stop()
        raise
    return server


LINE = "%d{ISO8601} [%-5p] %t %c - %m%n"


def log4j2_xml() -> str:
    """TorchServe's logging, quieter than its own log4j2.xml, which logs each request ~10 times at DEBUG
    (ts_log.log twice, stdout once): 6 MB per 2,600 requests and most of the Java frontend's CPU. Kept: one
    access-log line per request, the workers' output (model_log.log, where `model_load_failure` looks),
    lifecycle lines in ts_log.log, and warnings on stdout (torchserve.out). Metrics go to Prometheus, not to
    files."""

    def rolling(name: str, pattern: str) -> str:
        path = f"${{env:LOG_LOCATION:-logs}}/{name}"
        return (
            f'<RollingFile name="{name}" fileName="{path}.log" filePattern="{path}.%d{{dd-MMM}}.log.gz">'
            f'<PatternLayout pattern="{pattern}"/><Policies><SizeBasedTriggeringPolicy size="100 MB"/>'
            '<TimeBasedTriggeringPolicy/></Policies><DefaultRolloverStrategy max="5"/></RollingFile>'
        )

    per_request = (
        "org.pytorch.serve.wlm.BatchAggregator",
        "org.pytorch.serve.wlm.WorkerThread",
        "org.pytorch.serve.wlm.WorkerLifeCycle",
        # with ts_open_inference_protocol: a line per connection, and one per health probe
        "org.pytorch.serve.ServerInitializer",
        "org.pytorch.serve.http.api.rest.OpenInferenceProtocolRequestHandler",
    )
    appenders = [
        f'<Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="{LINE}"/></Console>',
        rolling("access_log", "%d{ISO8601} - %m%n"),
        rolling("model_log", LINE),
        rolling("ts_log", LINE),
    ]
    loggers = [
        '<Logger name="ACCESS_LOG" level="info" additivity="false"><AppenderRef ref="access_log"/></Logger>',
        '<Logger name="MODEL_LOG" level="info" additivity="false"><AppenderRef ref="model_log"/></Logger>',
        '<Logger name="MODEL_METRICS" level="off"/>',
        '<Logger name="TS_METRICS" level="off"/>',
        '<Logger name="io.netty" level="error"/>',
        '<Logger name="org.apache" level="off"/>',
        (
            '<Logger name="org.pytorch.serve" level="info" additivity="false"><AppenderRef ref="ts_log"/>'
            '<AppenderRef ref="STDOUT" level="warn"/></Logger>'
        ),
        *(f'<Logger name="{name}" level="warn"/>' for name in per_request),
        '<Root level="warn"><AppenderRef ref="STDOUT"/><AppenderRef ref="ts_log"/></Root>',
    ]
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<Configuration>",
            "  <Appenders>",
            *(f"    {a}" for a in appenders),
            "  </Appenders>",
            "  <Loggers>",
            *(f"    {line}" for line in loggers),
            "  </Loggers>",
            "</Configuration>",
            "",
        ]
    )


def worker_threads(workers: int) -> int:
    """An equal share of the CPUs for each of `workers` (more threads than cores only busy-wait). Intra-op
    threads (OMP_NUM_THREADS) are shared among every worker of every model; WORKER_CPUS_ENV among one model's
    workers only (what a worker may use while the other models idle: the LSTM handler runs batch shards on
    that many threads)."""
    return max(1, (os.cpu_count() or 1) // workers)


def refuse_if_running(folder: Path) -> None:
    server = running_server(folder)
    if server is not None:
        raise MlkubeError(
            f"TorchServe already serves this run (pid {server.pid}, {server.url('inference')})",
            f"stop it first: `mlkube serve {folder.parent} --stop`",
        )


def running_server(folder: Path) -> Server | None:
    """The server recorded in `folder/server.json` if it still runs; a stale record is removed."""
    path = folder / SERVER_JSON
    if not path.is_file():
        return None
    record = read_json(path)
    server = Server(**{**record, "folder": Path(record["folder"])})
    if server.alive() and _serves_folder(server.pid, server.folder):
        return server
    path.unlink(missing_ok=True)
    return None


def _serves_folder(pgid: int, folder: Path) -> bool:
    """Whether process group `pgid` is still a TorchServe of `folder` (and not a reused process id)."""
    import psutil

    config = str(folder / "config.properties")
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and config in (process.info["cmdline"] or []):
                return True
    return False


def check_port_free(host: str, port: int, api: str) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise MlkubeError(
                f"cannot serve the {api} API on {host}:{port}: {err.strerror}",
                f"stop what uses port {port}, or set serve.{api}_port in the spec",
            ) from None


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# The longest Unix socket path in the private folder: a worker's, `<java.io.tmpdir>/.ts.sock.<port>`.
LONGEST_SOCKET = "tmp/.ts.sock.65535"


def private_folder() -> Path:
    """A new folder only this user can enter (mode 0700), under the temporary directory: TorchServe's working
    directory (so the first entry of its classpath), the management socket, the key file's link, the checked
    copies of the archives and tmp/ (java.io.tmpdir: the unpacked models and the workers' sockets)."""
    private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    if len(os.fsencode(private / max(MANAGEMENT_SOCKET, LONGEST_SOCKET, key=len))) > SOCKET_PATH_MAX:
        shutil.rmtree(private)
        raise MlkubeError(
            f"the temporary directory {tempfile.gettempdir()} is too deep for a Unix socket path",
            "set TMPDIR to a shorter folder (e.g. /tmp)",
        )
    return private


def key_file_link(key_file: Path, link: Path) -> None:
    """TorchServe writes its keys to `key_file.json` in its working directory (the private folder), and
    again at each key renewal: `link` there points it at `key_file` in the serving folder, the one file where
    every client (`mlkube predict`, the printed curl line, the chart's helm test) reads them. TorchServe only
    writes an existing file through a link, so `key_file` is made empty (owner-only) here, anew: whatever was
    at its name (a stale file, a planted link) is removed, not followed."""
    key_file.unlink(missing_ok=True)
    os.close(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    link.symlink_to(key_file)


# TorchServe hands each batch to its worker through CompletableFuture.runAsync. Java's common pool gets CPUs -
# 1 threads; with fewer than 2 (a 2-CPU pod or VM), runAsync starts a new thread for every batch, which cost
# ~12 % of the unbatched LSTM's throughput on a 2-CPU machine. jvm_options may still set it (the last -D
# wins).
FORK_JOIN_PARALLELISM = "-Djava.util.concurrent.ForkJoinPool.common.parallelism"


def common_pool_parallelism() -> int:
    """The JVM's own default (CPUs - 1), but at least 2, so that CompletableFuture keeps a pool of threads."""
    return max(2, (os.cpu_count() or 1) - 1)


def config_properties(
    run: Run,
    serve: ServeSpec,
    names: list[str],
    tmpdir: Path,
    management: Path,
    store: Path,
    agent: Path | None = None,
) -> str:
    """TorchServe's config.properties: loopback addresses, the management API on the Unix socket
    `management`, the archives in `store` (the checked copies), token auth, Prometheus metrics, dynamic
    batching; each model's version is the run id; the Java agent `agent` (mlkube's Open Inference Protocol
    endpoints, serving/plugin.py)."""
    version, folder = run.id, run.serving
    models = {
        name: {
            version: {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": serve.workers,
                "maxWorkers": serve.workers,
                "batchSize": serve.batch_size,
                "maxBatchDelay": serve.max_batch_delay_ms,
                "responseTimeout": RESPONSE_TIMEOUT_S,
            }
        }
        for name in names
    }
    props = {
        "inference_address": f"http://{serve.host}:{serve.inference_port}",
        # A management key can scale workers without bound (TorchServe has no cap), so no network reaches the
        # management API: it listens on a socket in a folder only the serving user can enter.
        "management_address": f"unix:{management}",
        "metrics_address": f"http://{serve.host}:{serve.metrics_port}",
        # gRPC cannot be switched off (nor put on a Unix socket): its management service takes the same key,
        # so bind both to free loopback ports, whatever serve.host says, never to 7070/7071.
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": free_port(LOOPBACK),
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": free_port(LOOPBACK),
        "model_store": str(store),
        "load_models": ",".join(f"{name}.mar" for name in names),
        "models": json.dumps(models),
        "disable_token_authorization": str(not serve.token_auth).lower(),
        "token_expiration_min": serve.token_expiration_min,
        "enable_model_api": "false",
        # Registration is off (the management API answers 405); were it on, only the checked copies could
        # be registered (TorchServe's default allows any URL).
        "allowed_urls": allowed_urls(store),
        "enable_envvars_config": "false",
        "metrics_mode": "prometheus",
        "metrics_config": str(folder / "metrics.yaml"),
        "max_request_size": serve.max_request_bytes,
        # The handlers parse the raw body themselves, so malformed JSON and NaN get a 400 naming the problem.
        "decode_input_request": "false",
        # The Open Inference Protocol on the inference port: POST /v2/models/<m>/infer reaches the handlers
        # either way; with it, GET /v2, /v2/health/* and (mlkube's agent) /v2/models/<m>[/ready] answer.
        "ts_open_inference_protocol": "true",
        "install_py_dep_per_model": "false",
        "vmargs": (
            f"-Djava.io.tmpdir={tmpdir} -XX:-UsePerfData {f'-javaagent:{agent} ' if agent else ''}"
            f"{FORK_JOIN_PARALLELISM}={common_pool_parallelism()} {serve.jvm_options}"
        ).strip(),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def allowed_urls(model_store: Path) -> str:
    """TorchServe's `allowed_urls`: a Java regex of the archives in `model_store`, without backslashes (the
    properties file would read them as escapes); a character other than a letter, digit, `/`, `_` or `-`
    matches as `.` (any one), in brackets where it is a dot."""
    path = "".join(c if c.isalnum() or c in "/_-" else "[.]" if c == "." else "." for c in str(model_store))
    return f"file://{path}/[^/]+[.]mar"


def metrics_yaml() -> str:
    """TorchServe's default metrics plus the handlers' custom ones (only declared metrics reach
    Prometheus)."""
    import ts
    import yaml

    config = yaml.safe_load((Path(ts.__file__).parent / "configs" / "metrics.yaml").read_text())
    for name, (kind, unit) in METRICS.items():
        config["model_metrics"].setdefault(kind, []).append(
            {"name": name, "unit": unit, "dimensions": ["ModelName", "Level"]}
        )
    return yaml.safe_dump(config, sort_keys=False)


def write_examples(run: Run, names: list[str], folder: Path) -> None:
    from mlkube.serving.handlers import handler_for
    from mlkube.trainer.artifacts import read_model_card

    for name in names:
        card = read_model_card(run.model_dir(name), verify=False)
        _, handler = handler_for(card.framework)
        atomic_write_json(folder / f"{name}.json", handler.example(card))


# -------------------------------------------------------------------------------------------- health
def wait_ready(server: Server, timeout: float) -> None:
    """Wait until every model has a ready worker; fail early, naming the cause, if TorchServe or a model
    fails."""
    deadline = time.monotonic() + timeout
    while not models_ready(server):
        if server.process is not None and server.process.poll() is not None:
            raise MlkubeError(
                f"TorchServe exited during start-up (exit code {server.process.returncode}): "
                f"{log_tail(server.folder / 'logs' / 'torchserve.out')}",
                "see the logs in " + str(server.folder / "logs"),
            )
        failure = model_load_failure(server.folder / "logs" / "model_log.log", server.log_start)
        if failure:
            raise MlkubeError(
                f"TorchServe refused to load a model: {failure}",
                "re-create the model with `mlkube run`, then `mlkube archive RUN --force`",
            )
        if time.monotonic() > deadline:
            raise MlkubeError(
                f"TorchServe was not ready within {timeout:.0f} s: "
                f"{log_tail(server.folder / 'logs' / 'torchserve.out')}",
                f"see the logs in {server.folder / 'logs'}",
            )
        time.sleep(0.2)


def models_ready(server: Server) -> bool:
    """Whether every model of `server` has all its workers READY (asked on the management API)."""
    if server.token_file is not None:
        try:
            read_key(server.token_file, "management")
        except MlkubeError:
            return False  # TorchServe has not written its keys yet (the file is empty, or half written)
    try:
        for name in server.models:
            status, body = server.manage("GET", f"/models/{name}")
            workers = body[0]["workers"] if status == 200 else []
            if not workers or any(w["status"] != "READY" for w in workers):
                return False
    except (OSError, KeyError, ValueError, TypeError):
        return False  # not listening yet, or the key file is half written
    return True


def renew_key(server: Server, api: str = "inference") -> None:
    """A new `api` key (inference or management), asked with the API key; TorchServe rewrites the key file,
    where clients read it."""
    if server.token_file is None:
        raise MlkubeError("this server runs without token authorization: there is no key to renew")
    status, body = server.manage("POST", "/token", key="API", params={"type": api})
    if status != 200:
        raise MlkubeError(
            f"TorchServe refused to renew the {api} key: HTTP {status}: {body}",
            "restart the server for fresh keys: `mlkube serve RUN --stop`, then `mlkube serve RUN`",
        )


def model_load_failure(model_log: Path, start: int) -> str | None:
    """The first mlkube error a worker raised while loading a model (an integrity check, a refused type), in
    the lines of `model_log` from byte `start` on."""
    if not model_log.is_file():
        return None
    with open(model_log, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    for line in text.splitlines():
        if "MlkubeError: " in line:
            return line.split("MlkubeError: ", 1)[1].strip()
    return None


def log_tail(path: Path, lines: int = 5) -> str:
    return (
        " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"
    )


def describe(server: Server) -> str:
    """The URLs, the token file and a ready-to-paste curl line (the key is read from the file, never
    printed)."""
    first = server.models[0]
    lines = [
        f"TorchServe (pid {server.pid}) serves {', '.join(server.models)}",
        f"  inference:  {server.url('inference')}/predictions/<model>",
        f"  open inference protocol: {server.url('inference')}/v2/models/<model>/infer "
        "(GET /v2/models/<model>: metadata, .../ready)",
        f"  management: Unix socket {server.management_socket} (this user only)",
        f"  metrics:    {server.url('metrics')}/metrics",
        f"  logs:       {server.folder / 'logs'}",
    ]
    auth = ""
    if server.token_file:
        lines.append(
            f"  token file: {server.token_file} "
            "(keys expire after serve.token_expiration_min, 60 min by default)"
        )
        read_key = (
            f'python3 -c \'import json,sys; print("Authorization: Bearer " + '
            f'json.load(open(sys.argv[1]))["inference"]["key"])\' {server.token_file}'
        )
        auth = f" -H @<({read_key})"
    curl = (
        f"curl -s -H 'Content-Type: application/json'{auth} --data @{server.example(first)} "
        f"{server.url('inference')}/predictions/{first}"
    )
    lines += ["try it:", f"  {curl}"]
    return "\n".join(lines)


def wait_for_interrupt(server: Server) -> None:
    """Stay attached until Ctrl-C or SIGTERM (a container's stop), then stop the server; MlkubeError if
    TorchServe ends on its own."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while server.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        print(f"stopping TorchServe (pid {server.pid})")
        return
    finally:
        server.stop()
    raise MlkubeError(
        f"TorchServe ended on its own: {log_tail(server.folder / 'logs' / 'torchserve.out')}",
        f"see the logs in {server.folder / 'logs'}",
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
