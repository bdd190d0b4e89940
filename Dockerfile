# syntax=docker/dockerfile:1
# mlkube's one image: tuning (Ray), elastic LSTM training (torchrun), serving (TorchServe), the `mlkube` command.
# One stage chain, every stage FROM ${BASE}, so the legacy builder (which builds every stage) and BuildKit build
# the same thing and no stage needs an image the build was not asked for.
#   CPU (default):  docker build -t mlkube:dev .
#   GPU:            docker build --build-arg BASE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime \
#                     --build-arg TORCH_FROM=base -t mlkube:dev-gpu .
#   no registry:    make image   (deploy/docker/build.sh: a debootstrap base, the local torch wheel, the CA bundle)
# Size targets (docs/cluster.md): CPU under 2.5 GB, GPU under 9 GB (the CUDA base alone is about 6 GB).

ARG BASE=python:3.11-slim-bookworm

# ---- deps: a virtual environment with torch and every dependency; rebuilt only when pyproject/constraints change.
# hadolint ignore=DL3006
FROM ${BASE} AS deps
# TORCH_FROM: pip's options for where torch comes from (the CPU wheel index by default), or `base` to keep the
# torch of the base image (a CUDA base). CA_BUNDLE: a file in deploy/docker/extras/ pip trusts during the build.
ARG TORCH_FROM="--index-url https://download.pytorch.org/whl/cpu"
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
ARG CA_BUNDLE=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=${CA_BUNDLE:+/opt/extras/${CA_BUNDLE}}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/docker/extras/ /opt/extras/
COPY deploy/docker/slim.sh /opt/slim.sh
COPY pyproject.toml constraints.txt /opt/mlkube/
WORKDIR /opt/mlkube
# ray[default]: the dashboard and job server KubeRay's RayJob submits through; python-etcd: torchrun's etcd
# rendezvous (ElasticJob). A CPU image keeps the tested pins; a `base` torch keeps its own version.
# hadolint ignore=SC2086
RUN if [[ "$TORCH_FROM" == base ]]; then python3 -m venv --system-site-packages /opt/venv; \
      grep -v '^torch==' constraints.txt > /tmp/constraints.txt; \
    else python3 -m venv /opt/venv; cp constraints.txt /tmp/constraints.txt; \
      /opt/venv/bin/pip install $TORCH_FROM "torch==${TORCH_VERSION}+cpu"; fi \
 && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -c /tmp/constraints.txt -r /tmp/requirements.txt \
      "ray[default,tune]==${RAY_VERSION}" "python-etcd==0.4.5" "setuptools>=77" wheel \
 && bash /opt/slim.sh /opt/venv

# ---- plugin: mlkube's TorchServe agent (the Open Inference Protocol's model endpoints), compiled from its Java
# source against the environment's TorchServe; only the jar leaves this stage (the image has a JRE, no JDK).
# hadolint ignore=DL3006
FROM ${BASE} AS plugin
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deps /opt/venv/lib/python3*/site-packages/ts/frontend/model-server.jar /opt/ts/
COPY serving/plugin.py /opt/plugin/
COPY serving/oip_plugin /opt/plugin/oip_plugin
RUN python3 /opt/plugin/plugin.py /opt/mlkube-plugin /opt/ts/model-server.jar

# ---- the image: Java for TorchServe, the environment, then mlkube itself (the only layer a code change rebuilds).
# hadolint ignore=DL3006
FROM ${BASE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# TorchServe's frontend is Java. Unpinned: Debian's security updates should land on rebuild. (Java's post-install
# links its manual into man1, which slim bases leave out.)
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
# Non-root, numeric so Kubernetes' runAsNonRoot can check it; pods mount /runs, /spec and a writable /tmp.
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash mlkube \
 && mkdir -p /runs && chown 1000:1000 /runs
COPY --from=deps /opt/venv /opt/venv
COPY --from=plugin /opt/mlkube-plugin /opt/mlkube-plugin
ENV MLKUBE_TORCHSERVE_PLUGIN_DIR=/opt/mlkube-plugin

COPY pyproject.toml constraints.txt README.md /opt/mlkube/
# The source folders the wheel maps under `mlkube` (trainer/ → mlkube.trainer, helm/mlkube/ → mlkube/chart).
COPY mlkube /opt/mlkube/mlkube
COPY trainer /opt/mlkube/trainer
COPY serving /opt/mlkube/serving
COPY helm/mlkube /opt/mlkube/helm/mlkube
# Installed from outside the source folder, so the checks import the installed package. Bytecode is compiled
# once here: the image runs with PYTHONDONTWRITEBYTECODE and a read-only root.
WORKDIR /home/mlkube
RUN pip install --no-deps --no-build-isolation /opt/mlkube \
 && rm -rf /opt/mlkube \
 && python -m compileall -q "$(python -c 'import mlkube, os; print(os.path.dirname(mlkube.__file__))')" \
 && mlkube --help > /dev/null \
 && python -c "from mlkube.serving.plugin import plugin_jar; plugin_jar()" \
 && python -c "from mlkube.cluster.chart import chart_path; chart_path()"

USER 1000:1000
ENTRYPOINT ["mlkube"]
CMD ["--help"]
