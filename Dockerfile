# Enqueuer's production image: one image, two processes, chosen by the command
# (docker/entrypoint.sh), each a Cloud Run service listening on $PORT (8080 by default):
#
#   docker run -p 8080:8080 -e PROJECT_ID=... enqueuer              the API (uvicorn app:app)
#   docker run -p 8080:8080 -e PROJECT_ID=... enqueuer dashboard    the dashboard (Streamlit)
#   docker run --rm -e PROJECT_ID=... enqueuer enqueuer diagnose    any other command
#
# Settings come from the environment at run time (README, "The environment"); nothing
# secret or stateful is built in (.dockerignore keeps secrets out of the context).

# --- build: the runtime dependencies in a venv, from requirements.txt only ------------------
FROM python:3.11-slim-bookworm AS build

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# --only-binary: the slim image has no compiler, so a dependency without a wheel must fail
# here and say so, not half-build from source. Only requirements.txt: no test or lint tools.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -r /tmp/requirements.txt
# The `enqueuer` command. Installing the project (pip install .) would write the same
# console script, but would install the `emulator` package too, which has no place in
# production: the image runs enqueuer_core from /app instead (PYTHONPATH below).
COPY docker/enqueuer /opt/venv/bin/enqueuer

# --- the image -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PORT=8080

# A fixed UID, so that file ownership and policies (runAsUser, volume permissions) can name
# it. --no-log-init: no lastlog/faillog entry, which for a high UID is a huge sparse file.
RUN useradd --uid 10001 --user-group --no-log-init --create-home --home-dir /home/enqueuer \
        --shell /usr/sbin/nologin enqueuer

COPY --from=build /opt/venv /opt/venv
# The code, owned by root (the app's user reads it, cannot change it): app.py and api/,
# dashboard.py and pages/, enqueuer_core/, .streamlit/config.toml, and whatever else the
# repository keeps for its deployment (a workers file and its schemas land at
# /app/<their path in the repository>).
# .dockerignore leaves out tests, tools, the emulator, caches and anything secret.
WORKDIR /app
COPY . .

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["api"]
