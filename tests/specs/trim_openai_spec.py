"""Cut OpenAI's OpenAPI spec (openai/openai-openapi, 3.4 MB) down to what the conformance tests
use: the operations the portal serves (with their `x-oaiMeta` examples) and every schema they
reach, plus the response schemas the tests name.

    python tests/specs/trim_openai_spec.py openai-openapi.json > tests/specs/openai-openapi.json
"""

from __future__ import annotations

import json
import sys

PATHS = ("/chat/completions", "/completions", "/models", "/models/{model}")
SCHEMAS = (
    "ListModelsResponse",
    "Model",
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "ErrorResponse",
)
PREFIX = "#/components/schemas/"


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def trim(spec: dict) -> dict:
    paths = {path: spec["paths"][path] for path in PATHS}
    wanted: set[str] = set(SCHEMAS)
    _refs(paths, wanted)
    schemas = spec["components"]["schemas"]
    done: set[str] = set()
    while wanted - done:
        name = (wanted - done).pop()
        done.add(name)
        _refs(schemas[name], wanted)
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "paths": paths,
        "components": {"schemas": {name: schemas[name] for name in sorted(done)}},
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as source:
        json.dump(trim(json.load(source)), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
