"""Media: binary data with a content type and a name, the one way bytes cross a boundary."""

from __future__ import annotations


class Media:
    """Binary data with a content type and an optional name.

    Subclasses provide :meth:`get_bytes`. Media passes to and from server functions,
    background tasks and the browser (where it is a ``Blob``); bytes never travel as
    plain values.
    """

    content_type: str | None = None
    name: str | None = None

    def get_bytes(self) -> bytes:
        """Return the whole content as ``bytes``."""
        raise NotImplementedError

    @property
    def length(self) -> int:
        """The content's size in bytes."""
        return len(self.get_bytes())

    def get_url(self, download: bool = True) -> str | None:
        """A URL for the content, where there is one (none for in-memory Media)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} content_type={self.content_type!r} length={self.length}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Media):
            return NotImplemented
        return (self.content_type, self.name, self.get_bytes()) == (
            other.content_type,
            other.name,
            other.get_bytes(),
        )

    __hash__ = None  # type: ignore[assignment]


class BlobMedia(Media):
    """Media held in memory.

    ``BlobMedia(content_type, content, name=None)``, as in Anvil: ``content`` is
    ``bytes`` (a ``str`` is encoded as UTF-8).
    """

    def __init__(self, content_type: str | None, content: bytes | str, name: str | None = None) -> None:
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"BlobMedia content must be bytes, not {type(content).__name__}")
        self.content_type = content_type
        self.name = name
        self._content = bytes(content)

    def get_bytes(self) -> bytes:
        """Return the content."""
        return self._content

    @property
    def length(self) -> int:
        """The content's size in bytes."""
        return len(self._content)
