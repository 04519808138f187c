#!/usr/bin/env bash
# Fails when the repository tracks a private key or a database: a signing
# key or a ledger committed by accident (a test once wrote both into the
# source tree). Run by .ci/run; usable as a pre-commit hook.
#   scripts/check-tracked.sh [repository, default: this one]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

found=0
report() { echo "tracked but must not be: $1 ($2)" >&2; found=1; }

while IFS= read -r -d '' path; do
  case "$path" in
    *.key | *.pem | *.p12 | *.pfx | *.jks | *.sqlite | *.sqlite3 | *.sqlite-wal | *.sqlite-shm | *.db | *.db-wal | *.db-shm)
      report "$path" "key or database file name" ;;
  esac
  [[ -f "$path" ]] || continue
  if [[ "$(head -c 15 "$path")" == "SQLite format 3" ]]; then
    report "$path" "SQLite database"
  fi
done < <(git ls-files -z)

# Key material inside any tracked text file: PEM private keys and Go note
# signing keys (PRIVATE+KEY+<name>+<8 hex>+<base64>), not mere mentions.
while IFS= read -r path; do
  report "$path" "private key material"
done < <(git grep -l -I -E -e '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' \
  -e 'PRIVATE\+KEY\+[^+ <>]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]{20,}' -- . || true)

exit "$found"
