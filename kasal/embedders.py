"""Embedding models, named like LLMs and bound by the same rules.

``openai/<model>``      OpenAI's ``/v1/embeddings`` (OPENAI_API_KEY, optional OPENAI_BASE_URL)
``ollama/<model>``      Ollama's OpenAI-compatible API (OLLAMA_HOST, default localhost:11434)
``compatible/<model>``  any OpenAI-compatible ``/v1/embeddings`` (``base_url`` in the spec,
                        only if KASAL_LLM_BASE_URLS allows it, or KASAL_LLM_BASE_URL; key from
                        ``api_key_env`` or KASAL_LLM_API_KEY)
``offline/<name>``      deterministic, no network: hashed word features (lexical similarity)

A spec never carries a key: ``api_key_env`` names one of the variables an LLM spec may name.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable

import httpx

from kasal.exceptions import ProviderAuthError, ProviderUnavailableError, UnknownModelError
from kasal.settings import get_settings
from kasal.spec import LLMSpec

Embedder = Callable[[list[str]], list[list[float]]]

#: Dimensions of the offline embedder.
OFFLINE_DIMENSIONS = 384
_WORD = re.compile(r"[a-z0-9]+")


def embedder_spec(spec: LLMSpec | None) -> LLMSpec:
    """The crew's embedder, or the worker's default (KASAL_EMBEDDER)."""
    return spec or LLMSpec(model=get_settings().embedder)


def offline_embed(texts: list[str]) -> list[list[float]]:
    """Hashed bag of words and word pairs, L2-normalised: texts sharing words are close."""
    vectors = []
    for text in texts:
        vector = [0.0] * OFFLINE_DIMENSIONS
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % OFFLINE_DIMENSIONS
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vectors.append([v / norm for v in vector])
    return vectors


def _endpoint(spec: LLMSpec) -> tuple[str, str]:
    """Base URL and key for a networked embedder, as :func:`kasal.llm.build_llm` decides
    them for LLMs (allowlisted ``base_url``, keys only from the environment)."""
    provider = spec.provider
    if spec.base_url and not get_settings().allows_base_url(spec.base_url):
        raise UnknownModelError(
            f"embedder base_url {spec.base_url!r} is not allowed on this worker: an operator "
            "lists the endpoints specs may use in KASAL_LLM_BASE_URLS",
            field="embedder.base_url",
        )
    if provider == "openai":
        base_url = spec.base_url or os.getenv("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        default_env, default_key = "OPENAI_API_KEY", ""
    elif provider == "ollama":
        host = os.getenv("OLLAMA_HOST", "http://localhost:11434").rstrip("/")
        if not host.startswith("http"):
            host = f"http://{host}"
        base_url = spec.base_url or f"{host}/v1"
        default_env, default_key = "OLLAMA_API_KEY", "ollama"
    elif provider == "compatible":
        base_url = spec.base_url or os.getenv("KASAL_LLM_BASE_URL") or ""
        if not base_url:
            raise UnknownModelError(
                "compatible/ embedders need base_url in the spec or KASAL_LLM_BASE_URL",
                field="embedder.base_url",
            )
        default_env, default_key = "KASAL_LLM_API_KEY", "not-needed"
    else:
        raise UnknownModelError(
            f"unknown embedder provider {provider!r} in {spec.model!r}; known: openai, "
            "ollama, compatible, offline",
            field="embedder.model",
        )
    key = os.getenv(spec.api_key_env or default_env, default_key)
    if not key:
        raise ProviderAuthError(
            f"no API key for embedder {spec.model!r}: set {spec.api_key_env or default_env} "
            "in the worker's environment"
        )
    return base_url.rstrip("/"), key


def build_embedder(spec: LLMSpec) -> Embedder:
    """A function from texts to vectors for ``spec``."""
    if spec.provider == "offline":
        return offline_embed
    base_url, key = _endpoint(spec)
    model = spec.model.split("/", 1)[1]

    def embed(texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            response = httpx.post(
                f"{base_url}/embeddings",
                json={"model": model, "input": texts},
                headers={"Authorization": f"Bearer {key}"},
                timeout=spec.timeout,
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"embedder unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise ProviderAuthError(f"embedder rejected the credentials: {response.text[:200]}")
        if response.status_code >= 400:
            raise ProviderUnavailableError(
                f"embedder answered {response.status_code}: {response.text[:200]}"
            )
        data = sorted(response.json()["data"], key=lambda d: d.get("index", 0))
        return [list(map(float, d["embedding"])) for d in data]

    return embed


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity (0 for vectors of different sizes or zero length)."""
    if len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
