#!/bin/sh
# One backup of Tessera's database, as the chart's backup CronJob runs it:
# pg_dump --format=custom of $TESSERA_DATABASE_URL into $BACKUP_DIR as
# tessera-<UTC time>.dump (written under a temporary name, renamed when complete),
# then only the newest $BACKUP_KEEP dumps are kept. Restore: docs/OPERATIONS.md.
set -eu
: "${TESSERA_DATABASE_URL:?}" "${BACKUP_DIR:?}" "${BACKUP_KEEP:?}"
# A dump left half-written by a failed run (the CronJob never runs two at once).
rm -f "$BACKUP_DIR"/.tessera-*.partial
stamp=$(date -u +%Y%m%dT%H%M%SZ)
partial="$BACKUP_DIR/.tessera-$stamp.partial"
pg_dump --format=custom --file="$partial" --dbname="$TESSERA_DATABASE_URL"
mv "$partial" "$BACKUP_DIR/tessera-$stamp.dump"
# The names sort by time: drop all but the newest $BACKUP_KEEP.
ls "$BACKUP_DIR" | grep -E '^tessera-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r \
  | tail -n +"$((BACKUP_KEEP + 1))" | while read -r old; do rm -f "$BACKUP_DIR/$old"; done
echo "backup $BACKUP_DIR/tessera-$stamp.dump written ($(wc -c < "$BACKUP_DIR/tessera-$stamp.dump") bytes)"
