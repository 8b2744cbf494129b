"""Schemathesis hooks for tests/api-fuzz.sh.

Schemathesis has no serializer for NDJSON (`application/x-ndjson`, `application/jsonl`) and would
skip every NDJSON example of `POST /v1/events`: this one sends strings as they are (lone surrogates
become invalid UTF-8, which the server must reject) and any other value as JSON lines.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/jsonl")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8", "surrogatepass")
