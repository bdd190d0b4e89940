# syntax=docker/dockerfile:1
# mlkube's one image: tuning (Ray), elastic LSTM training (torchrun), serving (TorchServe), the `mlkube` command.
#   CPU (default, small):  docker build -t mlkube:dev .
#   GPU (CUDA torch base): docker build --build-arg VARIANT=gpu -t mlkube:dev-gpu .
# Size targets (docs/cluster.md): CPU under 2.5 GB, GPU under 9 GB (the CUDA base alone is about 6 GB).

ARG VARIANT=cpu
ARG GPU_BASE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

# CPU: slim Python and the CPU torch wheel (about 200 MB instead of the multi-GB CUDA build from PyPI).
FROM python:3.11-slim-bookworm AS base-cpu
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# GPU: a CUDA build of torch, with cuDNN for the LSTM.
FROM ${GPU_BASE} AS base-gpu

# hadolint ignore=DL3006
FROM base-${VARIANT}
ARG VARIANT
ARG RAY_VERSION=2.60.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# TorchServe's frontend is Java. Unpinned: Debian's security updates should land on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mlkube
COPY pyproject.toml constraints.txt README.md ./
# The source folders the wheel maps under `mlkube` (trainer/ → mlkube.trainer, helm/mlkube/ → mlkube/chart).
COPY mlkube ./mlkube
COPY trainer ./trainer
COPY serving ./serving
COPY helm/mlkube ./helm/mlkube
# ray[default]: the dashboard and job server KubeRay's RayJob submits through; python-etcd: torchrun's etcd
# rendezvous (ElasticJob). The CPU image keeps the tested pins; the GPU image keeps its base's CUDA torch.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN constraints=(); if [[ "$VARIANT" == cpu ]]; then constraints=(-c constraints.txt); fi \
 && pip install "${constraints[@]}" . "ray[default,tune]==${RAY_VERSION}" "python-etcd==0.4.5" \
 && mlkube --help > /dev/null \
 && python -c "from mlkube.cluster.chart import chart_path; chart_path()" \
 && rm -rf /opt/mlkube/mlkube /opt/mlkube/trainer /opt/mlkube/serving /opt/mlkube/helm

# Non-root, numeric so Kubernetes' runAsNonRoot can check it; pods mount /runs, /spec and a writable /tmp.
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash mlkube \
 && mkdir -p /runs && chown 1000:1000 /runs
USER 1000:1000
WORKDIR /home/mlkube
ENTRYPOINT ["mlkube"]
CMD ["--help"]
