"""A demo service that crashes after a few seconds, to show respawn and backoff."""

import random
import sys
import time

lifetime = random.uniform(2, 6)
print(f"flaky: up, will crash in {lifetime:.1f}s")
time.sleep(lifetime)
print("flaky: crashing now", file=sys.stderr)
sys.exit(1)
