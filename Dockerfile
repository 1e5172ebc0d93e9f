# One image for the API (`uvicorn api.main:app`) and the workers (`kasal worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CREWAI_DISABLE_TELEMETRY=true \
    OTEL_SDK_DISABLED=true

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p kasal api activities workflows cli \
    && touch kasal/__init__.py api/__init__.py activities/__init__.py workflows/__init__.py \
       cli/__init__.py \
    && pip install . \
    && pip uninstall -y kasal

COPY kasal ./kasal
COPY api ./api
COPY activities ./activities
COPY workflows ./workflows
COPY cli ./cli
# Bytecode written now (PYTHONDONTWRITEBYTECODE stops Python writing it later, and the
# image is read-only to the kasal user): the workflow sandbox imports the workflow modules
# afresh for every workflow run and would compile them from source each time.
RUN pip install --no-deps . \
    && python -c "import compileall, os, workflows; compileall.compile_dir(os.path.dirname(workflows.__file__), quiet=1)" \
    && useradd --create-home --uid 10001 kasal \
    && mkdir -p /data && chown kasal /data

USER kasal
ENV KASAL_DATA_DIR=/data
EXPOSE 8000

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
