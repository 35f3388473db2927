# syntax=docker/dockerfile:1.7
# Image for `radapter serve` (and the torchrun training Job). Two variants from one file:
#   docker build -t radapter:gpu .                           CUDA 13.0 runtime, onnxruntime-gpu
#   docker build --build-arg VARIANT=cpu -t radapter:cpu .   python:3.11-slim, CPU torch, onnxruntime
# docs/DEPLOY.md describes the settings, volumes and ports; none of this was built on a GPU host yet.

# The CUDA release matches the pinned torch build (torch 2.14.1+cu130). Torch brings its own CUDA
# libraries as nvidia-* wheels, so the runtime flavour (no compiler, no cuDNN) is enough.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
# Which runtime stage becomes the image: gpu or cpu.
ARG VARIANT=gpu

# uv only for the build stages: it installs a standalone CPython on the Ubuntu base and resolves
# the locked dependencies faster than pip. It never reaches the final image.
FROM ${UV_IMAGE} AS uv

# ---- gpu build: Python 3.11 (Ubuntu 24.04 ships 3.12, the lock was tested on 3.11) and a venv.
FROM ${CUDA_IMAGE} AS gpu-build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
# A python-build-standalone interpreter needs nothing from the OS but glibc, so no apt step.
RUN uv python install 3.11 && uv venv --python 3.11 /opt/venv
WORKDIR /app
# The whole repository (minus .dockerignore), so files it ships beside the code (the embedded
# backbone, demo tenants) are in the image without being listed here.
COPY . .
# Editable install: the code runs from /app, and non-Python files under training/ and service/
# stay importable by path, which a wheel would drop because the project declares no package data.
# PyPI's torch 2.14.1 wheel for x86_64 Linux is the CUDA 13.0 build, so the lock selects it as is.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/venv/bin/python -c requirements.lock -e '.[gpu]'

# ---- cpu build: the same steps on python:3.11-slim, with torch from the CPU wheel index.
FROM ${PYTHON_IMAGE} AS cpu-build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv
WORKDIR /app
COPY . .
# Torch and torchvision first, at the versions the lock pins, from the CPU index: the PyPI wheels
# would pull several GB of CUDA libraries. The constrained install then keeps them, because
# `torch==2.14.1` in the lock also matches `2.14.1+cpu`.
# SC2046 is ignored because the unquoted grep output must split into one requirement per word.
# hadolint ignore=SC2046
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/venv/bin/python \
        --index-url https://download.pytorch.org/whl/cpu \
        $(grep -E '^(torch|torchvision)==' requirements.lock) \
 && uv pip install --python /opt/venv/bin/python -c requirements.lock -e '.[cpu]'

# ---- runtime bases: only the interpreter, the venv and the source tree are copied over.
FROM ${CUDA_IMAGE} AS gpu-runtime
COPY --from=gpu-build /opt/python /opt/python
COPY --from=gpu-build /opt/venv /opt/venv
COPY --from=gpu-build /app /app
# The NVIDIA container runtime mounts the driver only when the image asks for compute.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM ${PYTHON_IMAGE} AS cpu-runtime
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build /app /app

# ---- final image, shared by both variants.
FROM ${VARIANT}-runtime AS final
# A fixed non-root uid, so Kubernetes `runAsUser`/`fsGroup` and host bind mounts can match it.
ARG APP_UID=10001
RUN useradd --uid "${APP_UID}" --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin radapter \
 && mkdir -p /srv/adapters /models \
 && chown radapter:radapter /srv/adapters
# The venv first on PATH gives `radapter` and `torchrun`. The source tree is root-owned and
# read-only for the service, so bytecode is not written next to it; caches go under /tmp, the
# one place a read-only root filesystem (see the Kubernetes Deployment) leaves writable.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    RADAPTER_ADAPTER_STORE=/srv/adapters
WORKDIR /app
# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd.
USER ${APP_UID}
EXPOSE 8000
# /healthz answers once uvicorn listens, which is after the backbone has loaded; start-period
# covers that load. The image has no curl, so the check uses the venv's Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# `serve` binds 127.0.0.1 by default; a container must listen on all interfaces to be reachable.
ENTRYPOINT ["radapter", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
