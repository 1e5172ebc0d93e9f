"""Knowledge sources: strings and files under the files directory, read and chunked.

Text and Markdown are read as they are, PDF page by page (``pypdf``), CSV as one line per
row (``column: value`` pairs), JSON pretty-printed. Chunks break at paragraph, then
sentence, then word boundaries, with a small overlap, as CrewAI's sources chunk. A source's
identity is the hash of its text: it is embedded once per content hash and crew scope, and
an edited file is a new source.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass

from kasal.exceptions import InvalidSpecError
from kasal.settings import get_settings
from kasal.spec import KnowledgeSourceSpec

CHUNK_CHARS = 800
OVERLAP_CHARS = 100
#: A file larger than this is refused (knowledge is for documents, not data dumps).
MAX_FILE_BYTES = 20_000_000
SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".csv", ".json")


@dataclass(frozen=True)
class LoadedSource:
    """A source's text, its content hash and a label (file path or ``string``)."""

    label: str
    text: str
    digest: str

    def chunks(self) -> list[str]:
        """The source cut into overlapping chunks."""
        return chunk_text(self.text)


def load_source(source: KnowledgeSourceSpec) -> LoadedSource:
    """Read one source; a missing, unreadable or outside file is a spec error."""
    if source.content is not None:
        return _loaded("string", source.content)
    assert source.path is not None
    root = get_settings().readable_files_dir()
    target = (root / source.path).resolve()
    if root not in target.parents:
        raise InvalidSpecError(
            f"knowledge file {source.path!r} is outside the files directory",
            field="knowledge_sources",
        )
    if not target.is_file():
        raise InvalidSpecError(
            f"knowledge file {source.path!r} does not exist in the workers' files directory",
            field="knowledge_sources",
        )
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidSpecError(
            f"knowledge file {source.path!r}: {suffix or 'no extension'} is not one of "
            + ", ".join(SUFFIXES),
            field="knowledge_sources",
        )
    data = target.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise InvalidSpecError(
            f"knowledge file {source.path!r} is larger than {MAX_FILE_BYTES} bytes",
            field="knowledge_sources",
        )
    return _loaded(source.path, _text_of(suffix, data))


def _loaded(label: str, text: str) -> LoadedSource:
    return LoadedSource(label, text, hashlib.sha256(text.encode()).hexdigest())


def _text_of(suffix: str, data: bytes) -> str:
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
    text = data.decode("utf-8", "replace")
    if suffix == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        return "\n".join(", ".join(f"{k}: {v}" for k, v in row.items()) for row in rows)
    if suffix == ".json":
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError as exc:
            raise InvalidSpecError(f"knowledge JSON file is not valid JSON: {exc}") from exc
    return text


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Cut ``text`` into chunks of at most ``size`` characters at natural boundaries."""
    text = text.strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start:end]
            for mark in ("\n\n", ". ", "\n", " "):
                cut = window.rfind(mark)
                if cut > size // 2:
                    end = start + cut + len(mark)
                    break
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        # The overlap starts at a word, not in the middle of one.
        following = max(end - overlap, start + 1)
        space = text.find(" ", following, end)
        start = space + 1 if space != -1 else following
    return chunks
