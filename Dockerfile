# releasegate: `releasegate serve` (the bot) and `releasegate worker` (the deploys).
# Build: docker build -t releasegate .
# Run:   docker run releasegate serve | docker run releasegate worker

ARG PYTHON=3.12

FROM python:${PYTHON}-slim AS build
WORKDIR /src
# Dependencies first, in their own layer: code changes do not reinstall them.
COPY requirements/runtime.txt scripts/install-deps ./
RUN ./install-deps /opt/venv runtime.txt
COPY pyproject.toml ./
COPY README.md ./
COPY bot ./bot
COPY workers ./workers
COPY config ./config
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:${PYTHON}-slim AS runtime
# git and ssh for the worker's clone and push; tini reaps git's children; bubblewrap is
# the sandbox the repository's `validate` command runs in, away from the worker's secrets.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client tini bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 releasegate \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/releasegate releasegate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RELEASEGATE_WORKDIR=/var/cache/releasegate \
    RELEASEGATE_POLICY=/etc/releasegate/policy.yaml \
    RELEASEGATE_LOG_FORMAT=json
RUN mkdir -p /var/cache/releasegate && chown 10001:10001 /var/cache/releasegate
USER 10001:10001
WORKDIR /home/releasegate
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "releasegate"]
CMD ["serve"]
