"""Embedders under the LLM rules (allowlisted base URLs, keys from the environment), against
a real OpenAI-compatible /v1/embeddings server; knowledge files read and chunked."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kasal.embedders import build_embedder, cosine, offline_embed
from kasal.exceptions import ProviderAuthError, UnknownModelError
from kasal.knowledge import chunk_text, load_source
from kasal.settings import get_settings
from kasal.spec import KnowledgeSourceSpec, LLMSpec


@pytest.fixture
def embeddings_server():
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
            data = [
                {"index": i, "embedding": [float(len(t)), 1.0, 0.0]}
                for i, t in enumerate(body["input"])
            ]
            payload = json.dumps({"data": list(reversed(data))}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()


def test_compatible_embedder_follows_the_llm_rules(embeddings_server, monkeypatch):
    url, seen = embeddings_server
    spec = LLMSpec(model="compatible/embed-small", base_url=url, api_key_env="KASAL_LLM_KEY_EMB")
    monkeypatch.setattr(get_settings(), "llm_base_urls", [])
    with pytest.raises(UnknownModelError, match="KASAL_LLM_BASE_URLS"):
        build_embedder(spec)

    monkeypatch.setattr(get_settings(), "llm_base_urls", [url])
    monkeypatch.delenv("KASAL_LLM_KEY_EMB", raising=False)
    monkeypatch.setenv("KASAL_LLM_KEY_EMB", "sk-emb")
    vectors = build_embedder(spec)(["ab", "abcd"])
    assert vectors == [[2.0, 1.0, 0.0], [4.0, 1.0, 0.0]]  # in input order
    assert seen[-1] == {
        "path": "/v1/embeddings",
        "auth": "Bearer sk-emb",
        "model": "embed-small",
        "input": ["ab", "abcd"],
    }

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        build_embedder(LLMSpec(model="openai/text-embedding-3-small"))


def test_offline_embedder_is_deterministic_and_lexical():
    a, b, c = offline_embed(["refund window annual plans", "annual plans refund", "parking"])
    assert offline_embed(["refund window annual plans"])[0] == a
    assert cosine(a, b) > 0.5 > abs(cosine(a, c))


def _pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` (built by hand: no PDF writer is a dependency)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_knowledge_files_of_every_kind_are_read_and_chunked(tmp_path, monkeypatch):
    monkeypatch.setattr(get_settings(), "files_dir", tmp_path)
    (tmp_path / "manual.pdf").write_bytes(_pdf("Refunds take 45 days"))
    (tmp_path / "plans.csv").write_text("plan,price\npro,99\n")
    (tmp_path / "faq.json").write_text('{"support": "email"}')
    (tmp_path / "notes.md").write_text("# Notes\n\nDurable.")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")

    def text(path: str) -> str:
        return load_source(KnowledgeSourceSpec(path=path)).text

    assert "Refunds take 45 days" in text("manual.pdf")
    assert text("plans.csv") == "plan: pro, price: 99"
    assert json.loads(text("faq.json")) == {"support": "email"}
    assert text("notes.md") == "# Notes\n\nDurable."
    for bad in ("image.png", "missing.txt"):
        with pytest.raises(Exception, match="knowledge file"):
            text(bad)
    with pytest.raises(ValueError):
        KnowledgeSourceSpec(path="../outside.txt")

    same = load_source(KnowledgeSourceSpec(content="x")).digest
    assert same == load_source(KnowledgeSourceSpec(content="x")).digest  # content hash

    long = "\n\n".join(f"Paragraph {i}. " + "word " * 60 for i in range(30))
    chunks = chunk_text(long)
    assert all(len(c) <= 800 for c in chunks) and len(chunks) > 5
    assert all(c.startswith(("Paragraph", "word")) for c in chunks)
