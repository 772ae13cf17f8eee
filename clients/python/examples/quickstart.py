"""Lease a key from a KeyMesh pool and print its label.

    KEYMESH_ADDR=127.0.0.1:50051 python examples/quickstart.py [pool]    # pool defaults to "demo"
"""

import os
import sys

from keymesh_client import Client, KeyMeshError


def main() -> int:
    addr = os.environ.get("KEYMESH_ADDR", "127.0.0.1:50051")
    pool = sys.argv[1] if len(sys.argv) > 1 else "demo"
    with Client(addr) as client:
        try:
            # Renewed in the background while the block runs; released (with its latency) on exit.
            with client.lease(pool, wait_timeout=5) as lease:
                print(f"leased {lease.key_label}")
        except KeyMeshError as error:
            print(f"quickstart: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
