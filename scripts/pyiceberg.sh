#!/usr/bin/env bash
# Installs pyiceberg (with its SQL catalog on SQLite and PostgreSQL, its Glue catalog, and
# pyarrow; the iceberg sink's tests read the tables back with it) once into a virtualenv under the cache directory and prints the path
# of its python. ~1 min the first time. Override the cache with SLUICE_CACHE_DIR.
set -euo pipefail
version=0.12.0
venv="${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}/pyiceberg-$version"
python="$venv/bin/python"
if [ -x "$python" ] && "$python" -c "import pyiceberg.catalog.sql, pyiceberg.catalog.glue, pyarrow, psycopg2, boto3" >/dev/null 2>&1; then
  echo "$python"
  exit 0
fi
echo "== installing pyiceberg $version into $venv (once)" >&2
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "pyiceberg[sql-sqlite,sql-postgres,glue,pyarrow]==$version" >&2
echo "$python"
