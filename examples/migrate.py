"""A demo one-shot task: pretends to migrate a database, then exits 0."""

import time

for step in ("create tables", "add indexes", "backfill"):
    print(f"migrate: {step}")
    time.sleep(0.3)
print("migrate: done")
