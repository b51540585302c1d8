"""Reading the small line files of the security settings (bootstrap tokens, the node id map).

Both are whitespace-separated columns, one entry a line, ``#`` starting a comment; the file is
size-bounded and every problem is reported as ``file:line: ...``.

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
...     _ = handle.write("# id  token\\nspiffe://td/ns/a/sa/b  s3cret   # trailing comment\\n\\n")
>>> [(where.endswith(":2"), columns) for where, columns in table_lines(handle.name, "tokens file", 1024)]
[(True, ['spiffe://td/ns/a/sa/b', 's3cret'])]
>>> os.unlink(handle.name)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from meshlib.security.errors import SecurityError


def table_lines(path: str | os.PathLike[str], what: str, max_bytes: int) -> Iterator[tuple[str, list[str]]]:
    """The non-empty lines of ``path`` as (``file:line``, columns), comments dropped.

    Raises :class:`SecurityError` naming the file when it cannot be read or is larger than
    ``max_bytes``; ``what`` names the file in those messages (``"tokens file"``). Bytes that are
    not UTF-8 are replaced, so a bad byte shows up as a bad column, not as a crash.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SecurityError(f"{name}: cannot read {what}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise SecurityError(f"{name}: {what} is larger than {max_bytes} bytes")
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield f"{name}:{number}", line.split()
