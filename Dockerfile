# syntax=docker/dockerfile:1
# Reward-service images, both variants from this one file (docs/deploy.md):
#   docker build -t reward-service:0.1.0-cpu .                          ONNX Runtime on CPU, distroless
#   docker build --build-arg VARIANT=gpu -t reward-service:0.1.0-gpu .  onnxruntime-gpu, CUDA runtime base
#   --build-arg OPENVINO=1 adds the OpenVINO runtime (the [openvino] extra) to either.
#   docker build --target trainer -t rlhf-trainer:0.1.0 .               PPO client for the Job example
# The serving install is the package's default dependency set: no torch, no transformers.
# tests/deploy/test_image_install.py runs this file's serving pip commands in a clean venv.

ARG VARIANT=cpu
# onnxruntime-gpu on PyPI (1.31) is built for CUDA 13 and cuDNN 9: the base must match its major.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
# checkov:skip=CKV_DOCKER_7: FROM ${CUDA_IMAGE} is the pinned 13.0.0 tag above; checkov reads no ARGs

# Build bases carry the same OS and Python as their runtime stage, so /opt/venv moves across
# unchanged (a venv points at its interpreter by absolute path).
FROM debian:12-slim AS build-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_IMAGE} AS build-gpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
ARG VARIANT
ARG OPENVINO=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reward_service/ reward_service/
COPY ppo_client/ ppo_client/
RUN python3 -m venv /opt/venv \
    && extras="" \
    && if [[ "$VARIANT" == gpu ]]; then extras="gpu"; fi \
    && if [[ "$OPENVINO" == 1 ]]; then extras="${extras:+$extras,}openvino"; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".${extras:+[$extras]}"
# onnxruntime (a default dependency) and onnxruntime-gpu install the same module, so the later
# one overwrites files of the earlier: keep the GPU build alone, reinstalled at its own version.
RUN if [[ "$VARIANT" == gpu ]]; then \
        ort="$(/opt/venv/bin/pip show onnxruntime-gpu | sed -n 's/^Version: //p')" \
        && /opt/venv/bin/pip uninstall -y onnxruntime onnxruntime-gpu \
        && /opt/venv/bin/pip install --no-cache-dir --no-deps "onnxruntime-gpu==${ort}"; \
    fi

# Runtime bases. CPU: distroless Debian 12 (Python 3.11, no shell, no package manager, user 65532).
FROM gcr.io/distroless/python3-debian12:nonroot AS runtime-cpu

# GPU: the CUDA + cuDNN runtime that onnxruntime-gpu loads; Ubuntu's Python, same uid as distroless.
FROM ${CUDA_IMAGE} AS runtime-gpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot

# The PPO trainer for k8s/examples/ppo-job (torch and transformers: never in the serving image).
# torch from PyPI is the CUDA build on x86_64: one image for CPU and GPU training nodes.
FROM python:3.11-slim-bookworm AS trainer
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reward_service/ reward_service/
COPY ppo_client/ ppo_client/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check torch==2.13.0 \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[train]"
RUN groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --create-home --shell /usr/sbin/nologin nonroot
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /home/nonroot
HEALTHCHECK NONE
ENTRYPOINT ["/opt/venv/bin/ppo-client"]
CMD ["--help"]

# The serving image (the default target).
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS serve
COPY --from=build /opt/venv /opt/venv
# The model repository is mounted (or baked by a derived image) at /models:
#   /models/<name>/<version>/{model.onnx,tokenizer.json,manifest.json}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REWARD_SERVICE_MODEL_REPO=/models \
    REWARD_SERVICE_HOST=0.0.0.0 \
    REWARD_SERVICE_PORT=8000 \
    REWARD_SERVICE_GRPC_PORT=8001 \
    REWARD_SERVICE_LOG_FORMAT=json
USER 65532:65532
# HTTP (REST, /metrics, probes) and the Open Inference Protocol's gRPC service.
EXPOSE 8000 8001
# Exec form with Python: the CPU image has no shell and no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["/opt/venv/bin/python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('REWARD_SERVICE_PORT', '8000') + '/readyz', timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself, then drains (REWARD_SERVICE_DRAIN_SECONDS).
ENTRYPOINT ["/opt/venv/bin/reward-service", "serve"]
