"""The usual ways to hand a leased key to an OpenAI-style HTTP API, against the local fake provider.

    npx tsx test/fake-provider/main.ts --port 0          # prints {"url": ...}
    KEYMESH_ADDR=127.0.0.1:50051 KEYMESH_FAKE_PROVIDER_URL=http://127.0.0.1:PORT python examples/openai_style.py

It creates a throwaway pool whose two keys the fake provider knows (each allowed 2 requests a
second), sends 12 requests through leased keys and deletes the pool. With the real `openai`
package the same patterns are `OpenAI(api_key=lease.key)` per request, or
`client.with_options(api_key=lease.key)`, or `extra_headers={"Authorization": f"Bearer {lease.key}"}`.
"""

import json
import os
import sys
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from keymesh_client import Client, Lease
from keymesh_client.v1 import admin_pb2


def post_json(url: str, body: dict, headers: dict[str, str]) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json", **headers}, method="POST"
    )
    # urllib raises HTTPError (with .code and .headers) for a 4xx/5xx: the scoped lease classifies it.
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read() or b"{}")


@dataclass
class ChatClient:
    """A minimal OpenAI-style client: built per request with the leased key ("client override")."""

    api_key: str
    base_url: str

    def create(self, prompt: str, lease: Lease) -> str:
        status, headers, body = post_json(
            f"{self.base_url}/chat/completions",
            {"model": "fake-model", "messages": [{"role": "user", "content": prompt}]},
            {"authorization": f"Bearer {self.api_key}"},
        )
        usage = body["usage"]
        # Send the provider's budget and the token usage back with the release.
        lease.report(status=status, headers=headers, input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])
        return body["choices"][0]["message"]["content"]


def per_request_client(lease: Lease, provider_url: str, prompt: str) -> str:
    """Pattern 1: a client object per request, configured with the leased key (and its base_url)."""
    # base_url as the OpenAI SDK takes it (ending in /v1), from the key's metadata when it has one.
    base_url = lease.metadata.get("base_url", f"{provider_url}/v1")
    return ChatClient(api_key=lease.key, base_url=base_url).create(prompt, lease)


def per_request_header(lease: Lease, provider_url: str, prompt: str) -> str:
    """Pattern 2: one shared HTTP setup, the key in each request's Authorization header."""
    status, headers, body = post_json(
        f"{provider_url}/v1/chat/completions",
        {"model": "fake-model", "messages": [{"role": "user", "content": prompt}]},
        {"authorization": f"Bearer {lease.key}"},
    )
    lease.report(status=status, headers=headers)
    return body["choices"][0]["message"]["content"]


def main() -> int:
    addr = os.environ.get("KEYMESH_ADDR", "127.0.0.1:50051")
    provider_url = os.environ.get("KEYMESH_FAKE_PROVIDER_URL")
    if not provider_url:
        print("set KEYMESH_FAKE_PROVIDER_URL (start: npx tsx test/fake-provider/main.ts --port 0)", file=sys.stderr)
        return 2
    pool = f"openai-style-{uuid.uuid4().hex[:8]}"
    secrets = [f"sk-example-{pool}-{i}" for i in range(2)]

    with Client(addr) as client:
        # Setup: a pool whose keys the fake provider accepts.
        client.admin.CreatePool(admin_pb2.CreatePoolRequest(pool=admin_pb2.Pool(name=pool)))
        for i, secret in enumerate(secrets):
            post_json(f"{provider_url}/_fake/keys", {"key": secret, "limits": {"requestsPerWindow": 2, "windowMs": 1000}}, {})
            client.admin.AddKey(admin_pb2.AddKeyRequest(pool=pool, key=admin_pb2.Key(id=f"key-{i}"), secret=secret))
        try:

            def ask(n: int) -> str:
                pattern = per_request_client if n % 2 == 0 else per_request_header
                # A 429 moves to the other key (or waits out its cooldown) within the budget.
                return client.call_with_retry(pool, lambda lease: pattern(lease, provider_url, f"question {n}"), budget_s=30)

            with ThreadPoolExecutor(3) as executor:
                for answer in executor.map(ask, range(12)):
                    print(answer)
            stats = client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=pool)).stats
            for key in stats.keys:
                print(f"{key.key_id}: {key.total_leases} leases, {key.input_tokens} input tokens")
        finally:
            client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=pool, force=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
