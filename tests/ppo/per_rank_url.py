"""``ppo-client`` under torchrun with one reward URL per rank: how a test fails one rank only.

Usage: ``torchrun ... tests/ppo/per_rank_url.py URL0,URL1 train ...``; rank r gets URL r.
"""

import os
import sys

from ppo_client.cli import main

if __name__ == "__main__":
    urls = sys.argv[1].split(",")
    rank = int(os.environ["RANK"])
    sys.exit(main([*sys.argv[2:], "--reward-url", urls[rank]]))
