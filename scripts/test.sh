#!/usr/bin/env bash
# Install what the test suite needs (real servers from Debian, Python deps in .venv) and run it.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests drive real servers: Prometheus (+ promtool), supervisord, systemd-analyze.
need=()
for pair in prometheus:prometheus promtool:prometheus supervisord:supervisor \
            supervisorctl:supervisor systemd-analyze:systemd; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
# The state bus tests run real Hazelcast members (Java) whose jar Maven fetches.
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
# Debian's Chromium for the Command Center's browser test (Playwright never downloads one).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u)
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The bundled M-series plugins are separate distributions, found only through entry points.
.venv/bin/python -m pip install -q -e plugins/guardian -e plugins/scheduler \
  -e plugins/governor -e plugins/comms
# The Hazelcast member jar (open source 5.4.0: CP subsystem included), fetched once into an
# ignored cache folder; tests/hazelcast starts members from it on loopback.
hz_jar=.cache/hazelcast/hazelcast-5.4.0.jar
[ -f "$hz_jar" ] || mvn -q dependency:copy -Dartifact=com.hazelcast:hazelcast:5.4.0 \
  -DoutputDirectory=.cache/hazelcast
# Static checks first, configured in pyproject.toml (docs/architecture.md): ruff must be clean;
# mypy must not report more errors than MYPY_BASELINE. It was 66 on e15b45c (before the reshape
# of issue #14); now 0: a change may not add a mypy error.
MYPY_BASELINE=0
.venv/bin/ruff check --quiet .
mypy_out=$(.venv/bin/python -m mypy 2>&1) && mypy_rc=0 || mypy_rc=$?
case "$mypy_out" in
  *"Success: no issues found"*) mypy_errors=0 ;;
  *) mypy_errors=$(printf '%s\n' "$mypy_out" | sed -n 's/^Found \([0-9]*\) errors\{0,1\} in .*/\1/p') ;;
esac
if [ -z "$mypy_errors" ] || [ "$mypy_rc" -gt 1 ]; then
  printf '%s\n' "$mypy_out"; echo "mypy did not run to the end (exit $mypy_rc)" >&2; exit 1
fi
if [ "$mypy_errors" -gt "$MYPY_BASELINE" ]; then
  printf '%s\n' "$mypy_out"
  echo "mypy: $mypy_errors errors, more than the baseline of $MYPY_BASELINE" >&2; exit 1
fi
echo "ruff: clean; mypy: $mypy_errors errors (baseline $MYPY_BASELINE)"

# One BLAS thread, as the service units run the daemon: on a small shared machine, BLAS
# threads spinning beside the daemons the tests start made a LAPACK-heavy test 13x slower.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest "$@"
