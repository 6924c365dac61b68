# gemmacli on an NVIDIA GPU:  docker build -t gemmacli . && \
#   docker run --gpus all -p 8000:8000 -v hf-cache:/home/gemma/.cache -e HF_TOKEN gemmacli serve --host 0.0.0.0 -m gemma-3-12b-it
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/gemmacli \
    PATH=/opt/gemmacli/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libsndfile1 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first so code changes do not reinstall torch. PyPI's torch wheels carry their CUDA runtime.
RUN python3 -m venv $VIRTUAL_ENV && pip install --upgrade pip && pip install "torch>=2.6,<3"
COPY pyproject.toml README.md LICENSE /src/
COPY gemmacli /src/gemmacli
# s3/gcs: serve -m s3://bucket/model and gs:// straight from object storage.
RUN pip install "/src[s3,gcs]" && rm -rf /src

RUN useradd --create-home --uid 1000 gemma
USER gemma
WORKDIR /home/gemma
# Hugging Face downloads and gemmacli's imported models both live under ~/.cache: mount a volume there.
ENV HF_HOME=/home/gemma/.cache/huggingface GEMMACLI_HOME=/home/gemma/.cache/gemmacli
VOLUME ["/home/gemma/.cache"]

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1

ENTRYPOINT ["gemmacli"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
