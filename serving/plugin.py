"""mlkube's TorchServe frontend plugin (`oip_plugin/`, Java): the Open Inference Protocol's model endpoints.

TorchServe 0.12 answers `GET /v2`, `/v2/health/live` and a constant `/v2/health/ready`, but not
`GET /v2/models/<m>` or `/v2/models/<m>/ready`. Its handler of those paths sits in the inference port's chain
after the key check and after `POST /v2/models/<m>/infer` has gone to the workers; a Java agent
(`-javaagent:<jar>` in the frontend's vmargs) loads mlkube's version of that one class in its place, which
answers the model endpoints too (docs/serving.md says why not a serving-SDK endpoint or a proxy).

The jar is built from the Java source here with `javac`, against the installed TorchServe's
`model-server.jar`, never shipped as a binary: ahead of time into a folder named by `PLUGIN_ENV` (the image's
build stage runs this file: `python3 plugin.py OUT_FOLDER MODEL_SERVER_JAR`), or else on first use into a
cache folder keyed by the source and the TorchServe version. Only the standard library at module level, so
that the image's build stage runs it without mlkube installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCES = Path(__file__).parent / "oip_plugin"
AGENT = "mlkube.torchserve.Agent"
# The handler the agent loads in place of TorchServe's (Agent.java: TARGET), and where the jar holds it.
REPLACED = "org/pytorch/serve/http/api/rest/OpenInferenceProtocolRequestHandler.class"
REPLACEMENT = "mlkube/torchserve/OpenInferenceProtocolRequestHandler.bytes"
JAR = "mlkube-oip.jar"
PLUGIN_ENV = "MLKUBE_TORCHSERVE_PLUGIN_DIR"  # a folder holding a built JAR (the image sets it)
METADATA_ENV = "MLKUBE_OIP_METADATA"  # the folder where handlers write, and the plugin reads, model metadata


def build(folder: Path, model_server_jar: Path) -> Path:
    """Compile the plugin against `model_server_jar` into `folder/JAR` (replaced atomically): the agent's
    classes, and the replacement handler's class file as a resource the agent reads."""
    javac = shutil.which("javac")
    if javac is None:
        raise FileNotFoundError("javac")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlkube-oip-") as tmp:
        classes = Path(tmp) / "classes"
        # -proc:none: model-server.jar carries annotation processors (log4j's) that must not run here.
        subprocess.run(
            [javac, "--release", "17", "-proc:none", "-cp", str(model_server_jar), "-d", str(classes)]
            + [str(p) for p in sorted(SOURCES.glob("*.java"))],
            check=True,
            capture_output=True,
            text=True,
        )
        built = Path(tmp) / JAR
        with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nPremain-Class: {AGENT}\n")
            for path in sorted(classes.rglob("*.class")):
                name = path.relative_to(classes).as_posix()
                jar.write(path, REPLACEMENT if name == REPLACED else name)
        os.replace(shutil.copy(built, folder / f".{JAR}.tmp"), folder / JAR)
    return folder / JAR


def model_server_jar() -> Path:
    """The installed TorchServe's frontend (the serving SDK the plugin compiles against)."""
    import ts

    return Path(ts.__file__).parent / "frontend" / "model-server.jar"


def plugin_jar() -> Path:
    """The built plugin (the frontend's `-javaagent`): in `PLUGIN_ENV`'s folder, or in the cache, built there
    first if missing."""
    from mlkube.trainer.errors import MlkubeError  # here: the module runs without mlkube in the image build

    given = os.environ.get(PLUGIN_ENV)
    if given:
        if not (Path(given) / JAR).is_file():
            raise MlkubeError(
                f"{PLUGIN_ENV}={given} holds no {JAR}",
                f"build it: python3 {__file__} {given} {model_server_jar()}, or unset {PLUGIN_ENV}",
            )
        return Path(given) / JAR
    server_jar = model_server_jar()
    folder = cache_root() / cache_key(server_jar)
    if (folder / JAR).is_file():
        return folder / JAR
    try:
        build(folder, server_jar)
    except FileNotFoundError:
        raise MlkubeError(
            "building mlkube's TorchServe plugin (the Open Inference Protocol's model endpoints) needs javac",
            "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless), or set "
            f"{PLUGIN_ENV} to a folder where it was built",
        ) from None
    except subprocess.CalledProcessError as err:
        raise MlkubeError(
            f"javac could not build mlkube's TorchServe plugin: {err.stderr.strip()[-2000:]}",
            f"mlkube's plugin is written for TorchServe 0.12 ({server_jar})",
        ) from None
    return folder / JAR


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlkube" / "torchserve-plugins"


def cache_key(server_jar: Path) -> str:
    """The source files and the TorchServe frontend (version and size) the plugin is built from."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.glob("*.java")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    version = (server_jar.parent.parent / "version.txt").read_text().strip()
    digest.update(f"{version}:{server_jar.stat().st_size}".encode())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))
