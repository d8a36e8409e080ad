"""Documents to chunks: which files are read, how they are decoded and split.

A directory is walked for text files (:data:`TEXT_SUFFIXES`; hidden files and folders, and
symbolic links leading out of the directory, are left out); a file named on its own is read
whatever its suffix. Files must be UTF-8 text (no NUL byte) and at most :data:`MAX_FILE_BYTES`.
Text is split by ``semantic-text-splitter`` (Markdown-aware for ``.md``): chunks of at most
``chunk_size`` characters, cut at the largest semantic unit that fits (section, paragraph,
sentence, word), consecutive chunks sharing up to ``overlap`` characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatstep.errors import BackendUnavailableError, ConfigError

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "TEXT_SUFFIXES",
    "Chunk",
    "ChunkSettings",
    "Document",
    "find_documents",
    "split_document",
]

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".rst", ".adoc"})
"""Suffixes taken when walking a directory (lower-cased)."""
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest file an index takes (4 MiB); a larger one is refused with its path."""
MAX_FILES = 20_000
"""The most files one index holds."""


@dataclass(frozen=True)
class ChunkSettings:
    """How text is split: ``chunk_size`` characters at most, ``overlap`` shared between chunks."""

    chunk_size: int = 1000
    overlap: int = 100

    def __post_init__(self) -> None:
        if not 50 <= self.chunk_size <= 100_000:
            raise ConfigError(
                "--chunk-size",
                f"{self.chunk_size} is out of range",
                "give 50 to 100000 characters",
            )
        if not 0 <= self.overlap < self.chunk_size:
            raise ConfigError(
                "--chunk-overlap",
                f"{self.overlap} must be at least 0 and less than the chunk size "
                f"({self.chunk_size})",
                "lower the overlap",
            )

    def key(self) -> str:
        return f"semantic-text-splitter/{self.chunk_size}/{self.overlap}"


@dataclass(frozen=True)
class Document:
    """A text file to index: ``source`` names it in the index and in citations."""

    source: str
    path: Path
    text: str
    digest: str
    """sha256 of the file's bytes and the chunk settings: what decides re-embedding."""


@dataclass
class Chunk:
    """One piece of a document: ``chunk`` is its position in the document, ``line`` its first."""

    source: str
    chunk: int
    text: str
    start: int
    line: int
    vector: list[float] = field(default_factory=list, compare=False)


def _walk(root: Path) -> Iterable[Path]:
    """Text files under ``root``; a symbolic link is followed only when it stays inside
    ``root`` (a link to ``/etc/passwd`` in DOCS is not indexed, and then served to readers)."""
    inside = root.resolve()
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts):
            continue
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES and _stays_in(path, inside):
            yield path


def _stays_in(path: Path, inside: Path) -> bool:
    try:
        return path.resolve().is_relative_to(inside)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _walk_left_out(root: Path) -> int:
    """Files of a directory walk that are not indexed: other suffixes, links leaving it."""
    inside = root.resolve()
    count = 0
    for path in root.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        leaves = path.is_symlink() and not _stays_in(path, inside)
        if leaves or (path.is_file() and path.suffix.lower() not in TEXT_SUFFIXES):
            count += 1
    return count


def _read(path: Path, source: str, settings: ChunkSettings) -> Document:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                str(path),
                f"is {size:,} bytes; an index takes files of at most {MAX_FILE_BYTES:,} bytes",
                "split the file, or leave it out of DOCS",
            )
        with path.open("rb") as handle:  # at most the limit, even if the file grew since
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                str(path),
                f"grew past {MAX_FILE_BYTES:,} bytes while it was read",
                "split the file, or leave it out of DOCS",
            )
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror})", "check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path),
            f"is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})",
            "convert it to UTF-8 (iconv -t utf-8), or leave it out of DOCS",
        ) from None
    if "\x00" in text:
        raise ConfigError(
            str(path),
            f"holds a NUL byte (byte {data.index(0)}): it is binary, or UTF-16 text",
            "convert it to UTF-8 text (iconv -f utf-16 -t utf-8), or leave it out of DOCS",
        )
    text = text.removeprefix("\ufeff")
    digest = hashlib.sha256(data + settings.key().encode()).hexdigest()
    return Document(source, path, text, digest)


def find_documents(
    paths: Sequence[str | Path], settings: ChunkSettings
) -> tuple[list[Document], int]:
    """The documents under ``paths`` and how many files a directory walk left out (suffix,
    or a link leading out).

    A directory's files are named relative to it; a file given on its own by its path as given.
    Raises ConfigError for a missing path, a file too large or not UTF-8, or too many files.
    """
    docs: dict[str, Document] = {}
    skipped = 0
    for given in paths:
        root = Path(given)
        if root.is_dir():
            files = [(p, p.relative_to(root).as_posix()) for p in _walk(root)]
            skipped += _walk_left_out(root)
        elif root.is_file():
            files = [(root, root.as_posix())]
        else:
            raise ConfigError(str(given), "does not exist", "give a directory or text files")
        for path, source in files:
            if len(docs) >= MAX_FILES:
                raise ConfigError(
                    "DOCS", f"holds more than {MAX_FILES:,} files", "index fewer files at once"
                )
            if source in docs:
                raise ConfigError(
                    str(path), f"is named {source!r} like another file", "give it once"
                )
            docs[source] = _read(path, source, settings)
    return list(docs.values()), skipped


def split_document(doc: Document, settings: ChunkSettings) -> list[Chunk]:
    """The document's chunks in order (blank text gives none)."""
    try:
        from semantic_text_splitter import MarkdownSplitter, TextSplitter
    except ImportError:  # pragma: no cover - the [rag] extra is missing
        raise BackendUnavailableError(
            'chunking needs semantic-text-splitter: pip install "chatstep[rag]"'
        ) from None
    markdown = doc.path.suffix.lower() in MARKDOWN_SUFFIXES
    splitter_class = MarkdownSplitter if markdown else TextSplitter
    splitter = splitter_class(settings.chunk_size, overlap=settings.overlap, trim=True)
    chunks: list[Chunk] = []
    for start, text in splitter.chunk_indices(doc.text):
        if not text.strip():
            continue
        line = doc.text.count("\n", 0, start) + 1
        chunks.append(Chunk(doc.source, len(chunks), text, start, line))
    return chunks
