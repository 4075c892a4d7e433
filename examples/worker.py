"""A demo worker: reports progress every two seconds, to stdout and stderr."""

import os
import sys
import time

worker = os.environ.get("WORKER_ID", "?")
job = 0
while True:
    job += 1
    print(f"worker {worker} finished job {job}")
    if job % 5 == 0:
        print(f"worker {worker}: job {job} was slow", file=sys.stderr)
    time.sleep(2)
