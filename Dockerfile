# One image for the API and the workers; docker-compose.yml gives each its command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p discovery graphstore workers api \
 && for p in discovery graphstore workers api; do touch $p/__init__.py; done \
 && pip install --no-cache-dir uv \
 && uv pip install --system --no-cache . \
 && pip uninstall -y circuit-atlas

COPY discovery ./discovery
COPY graphstore ./graphstore
COPY workers ./workers
COPY api ./api
COPY services ./services
# The shipped models and checkpointed runs are found beside the code (discovery.catalog), so the
# package is installed in place.
COPY models ./models
COPY runs ./runs
RUN uv pip install --system --no-cache --no-deps -e .

RUN useradd --create-home atlas
USER atlas
EXPOSE 8000
# No API keys are baked in: the API binds 0.0.0.0 here and refuses to start with the development
# keys, so give your own at run time: docker run -e ATLAS_API_KEYS=KEY:admin,KEY2:read ...
CMD ["circuits", "api", "--host", "0.0.0.0", "--port", "8000"]
