"""What `pip install mlkube` gives a user: one top-level name, the chart inside the package, and the same
commands as the checkout. The wheel is built from this checkout and installed into a fresh virtual environment
outside it, beside PyPI's `trainer` package (a PyTorch trainer that claims the top-level name `trainer`), both
without dependencies: the fresh environment borrows the project environment's libraries through a .pth line,
which adds its folder to sys.path but runs none of its .pth files (so mlkube's editable install stays out)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
NEIGHBOURS = ROOT / ".venv" / "neighbours"  # PyPI's trainer and coqpit, downloaded by `make install`
# Source folder → where the wheel puts it (pyproject.toml's package-dir).
MAPPED = {
    "mlkube": "mlkube",
    "trainer": "mlkube/trainer",
    "serving": "mlkube/serving",
    "helm/mlkube": "mlkube/chart",
}
# What the wheel is built from (the Dockerfile copies the same).
SOURCES = ("pyproject.toml", "README.md", "mlkube", "trainer", "serving", "helm/mlkube")
SPEC = "data: {name: iris}\nclassical: {models: [LR]}\nlstm: {elastic: {min_nodes: 1, max_nodes: 2}}\n"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what the image copies (a checkout's build/ may hold stale files)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("mlkube-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    """A new virtual environment outside the checkout, with the wheel and PyPI's trainer; its python."""
    neighbours = sorted(NEIGHBOURS.glob("*.whl"))
    if len(neighbours) < 2:
        pytest.fail(f"PyPI's trainer and coqpit wheels are not in {NEIGHBOURS}: run `make install`")
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        str(wheel),
        *map(str, neighbours),
    ]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "borrowed-libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def run_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MLKUBE_CHART")}
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_wheel_installs_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"mlkube", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}


def test_the_wheel_holds_every_package_the_chart_and_the_shipped_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for source, target in MAPPED.items():
        folder = ROOT / source
        wanted = {f"{target}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
        wanted = {w for w in wanted if "__pycache__" not in w}
        if source in ("mlkube", "trainer", "serving"):  # code: every module; data: the shipped data sets
            wanted = {w for w in wanted if w.endswith(".py") or "/datasets/" in w}
        assert wanted <= names, f"{source}/ files missing from the wheel: {sorted(wanted - names)[:5]}"
    assert "mlkube/chart/Chart.yaml" in names and "mlkube/chart/.helmignore" in names


def test_mlkube_and_pypis_trainer_import_side_by_side(fresh_env, tmp_path):
    code = (
        "import trainer, mlkube.trainer.run, mlkube.serving.server, mlkube.cli\n"
        "print(trainer.__file__); print(mlkube.trainer.run.__file__); print(trainer.__version__)"
    )
    done = run_in(fresh_env, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs, ours, version = done.stdout.split()
    site_packages = Path(ours).parents[2]
    assert Path(theirs) == site_packages / "trainer" / "__init__.py"  # PyPI's, not mlkube's
    assert Path(ours) == site_packages / "mlkube" / "trainer" / "run.py"
    assert version == "v0.0.36"  # the VERSION file of PyPI's trainer 0.0.36
    assert ROOT not in Path(ours).parents and site.getsitepackages()[0] not in ours


def test_submit_dry_run_from_the_wheel_prints_the_checkouts_objects(fresh_env, tmp_path):
    spec = tmp_path / "experiment.yaml"
    spec.write_text(SPEC)
    args = (
        "-m",
        "mlkube.cli",
        "submit",
        str(spec),
        "--kind",
        "elastic",
        "--run-id",
        "r1",
        "-n",
        "ml",
        "--dry-run",
    )
    installed = run_in(fresh_env, *args, cwd=tmp_path)
    checkout = run_in(Path(sys.executable), *args, cwd=ROOT)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert checkout.returncode == 0, checkout.stderr[-2000:]
    assert "kind: TrainJob" in installed.stdout and "mlkube.commands.lstm_worker" in installed.stdout
    assert installed.stdout == checkout.stdout
