#!/bin/sh
# The image's entrypoint (see the Dockerfile):
#   api          the HTTP API, uvicorn app:app (the default command)
#   dashboard    the Streamlit dashboard
#   anything else runs as given: `enqueuer diagnose`, `sh`, ...
# Both servers listen on 0.0.0.0:$PORT, which Cloud Run sets (8080 otherwise), with the same
# flags as `enqueuer dev` (enqueuer_core/devstack.py); words after `api` or `dashboard` are
# passed on to the server. `exec` makes the server PID 1, so that the SIGTERM of Cloud Run
# or `docker stop` reaches it and it shuts down cleanly.
set -eu

port="${PORT:-8080}"
command="${1:-api}"
if [ "$#" -gt 0 ]; then
    shift
fi

case "$command" in
    api)
        # Cloud Run's front end ends TLS and forwards the request: trust its X-Forwarded-*
        # headers (the container is only reachable through it), so that URLs the API builds
        # carry the client's scheme and host.
        exec uvicorn app:app --host 0.0.0.0 --port "$port" \
            --proxy-headers --forwarded-allow-ips '*' "$@"
        ;;
    dashboard)
        # Headless: no browser to open, no e-mail prompt; no file watcher: the code in an
        # image never changes, and watching it costs CPU and inotify handles.
        exec streamlit run dashboard.py --server.address 0.0.0.0 --server.port "$port" \
            --server.headless true --server.fileWatcherType none \
            --browser.gatherUsageStats false "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
