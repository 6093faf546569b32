#!/bin/sh
# Runs one Parley app in a container: the first argument (unless it is an
# option), else PARLEY_APP, else the gateway. Further arguments go to the app.
#   docker run parley                      the gateway (standalone without PARLEY_REMOTE_SERVICES)
#   docker run parley presence             the presence service (needs REDIS_URL)
#   docker run parley cli who bob          the parley CLI
#   docker-entrypoint.sh probe /readyz     health check: GET a path on this container's HTTP port, exit 0 on 2xx
set -eu
# The apps are found from here; the working directory stays the container's (the image's /files, or `docker run -w`):
# where the CLI reads the files it sends from and saves the ones it accepts (/app is root's, the container runs as node).
root="$(cd "$(dirname "$0")/.." && pwd)"

case "${1:-}" in
  "" | -*) app="${PARLEY_APP:-gateway}" ;;
  *) app="$1" && shift ;;
esac

if [ "$app" = probe ]; then
  path="${1:-/healthz}"
  exec node -e '
    const [port, path] = process.argv.slice(1);
    fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) }).then(
      (res) => process.exit(res.ok ? 0 : 1),
      () => process.exit(1),
    );' "${PARLEY_HTTP_PORT:-8080}" "$path"
fi

case "$app" in
  "" | *[!a-z0-9-]*) main="" ;;
  *) main="$root/dist/apps/$app/src/main.js" ;;
esac
if [ -z "$main" ] || [ ! -f "$main" ]; then
  echo "parley: unknown app \"$app\"; run one of: $(ls "$root/dist/apps" | tr '\n' ' ')" >&2
  exit 2
fi
exec node "$main" "$@"
