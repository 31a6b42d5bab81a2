"""Zips of frames as the web demo reads them: in memory, member by member, never extracted to disk.

An uploaded zip comes from anyone who can reach the page, so before anything is decompressed it is checked
for what a hostile archive does: a central directory of millions of entries (refused from the zip's end
record, before Python parses it), member names that climb out of a folder (``../x.png``, ``/etc/x.png``,
``C:\\x.png``) or are links, encrypted members, and declared sizes beyond the limits; while a member is
read, decompression stops as soon as it yields more bytes than the limits allow (its header may lie).
Every problem is a :class:`~.inputs.DemoError` naming the zip, the member and the limit.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .config import MB, DemoConfig

CHUNK = 1 << 20


class ArchiveError(ValueError):
    """A zip the demo refuses (the demo shows it as a :class:`~.inputs.DemoError`)."""


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _end_record(path: Path) -> tuple[int, int] | None:
    """``(entries, central directory bytes)`` from the zip's end record, the one ``zipfile`` itself reads
    (zip64 included), before the directory is parsed; ``None`` when the end record cannot be found."""
    finder = getattr(zipfile, "_EndRecData", None)  # CPython's own reader (private, but unchanged since 2.6)
    if finder is None:
        return None
    with open(path, "rb") as f:
        record = finder(f)
    if not record:
        return None
    return int(record[zipfile._ECD_ENTRIES_TOTAL]), int(record[zipfile._ECD_SIZE])


def unsafe_name(name: str) -> str | None:
    """Why a member's name is refused (an absolute path, a drive, ``..``, a NUL), or ``None`` when it is fine."""
    posix = name.replace("\\", "/")
    if "\x00" in name:
        return "has a NUL character in its name"
    if posix.startswith("/"):
        return "is an absolute path"
    if len(posix) >= 2 and posix[1] == ":":
        return "names a drive"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of its folder (..)"
    return None


def zip_entries(path: Path, config: DemoConfig) -> list[zipfile.ZipInfo]:
    """The zip's entries, every one checked (names, links, encryption, declared sizes); ``ArchiveError``
    for a zip the demo refuses, naming the member and the limit."""
    try:
        end = _end_record(path)
    except OSError as exc:
        raise ArchiveError(f"{path.name} is not a readable zip file ({exc})") from exc
    if end is None:
        raise ArchiveError(f"{path.name} is not a readable zip file (no zip end record: is it really a .zip?)")
    entries, directory = end
    # an entry takes at least 46 bytes of directory; 1 KiB each leaves room for long names and extra fields
    if entries > config.max_zip_members or directory > 1024 * config.max_zip_members:
        raise ArchiveError(f"{path.name} lists {entries} entries in a {_mb(directory)} directory; the demo reads "
                           f"zips of at most {config.max_zip_members} entries (max_zip_members)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError(f"{path.name} is not a readable zip file ({exc})") from exc
    if len(infos) > config.max_zip_members:  # the end record lied about the count
        raise ArchiveError(f"{path.name} holds {len(infos)} entries; the demo reads zips of at most "
                           f"{config.max_zip_members} entries (max_zip_members)")
    for info in infos:
        why = unsafe_name(info.filename)
        if why is not None:
            raise ArchiveError(f"{path.name}: the member {info.filename!r} {why}; the demo refuses zips with such "
                               "paths (zip them from inside the frames' folder)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{path.name}: the member {info.filename!r} is a symbolic link; zip the frames "
                               "themselves")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{path.name}: the member {info.filename!r} is encrypted; upload a zip without "
                               "a password")
    return infos


def check_sizes(path: Path, members: list[zipfile.ZipInfo], config: DemoConfig) -> None:
    """The members to be read, by their declared sizes: each at most ``max_upload_mb``, all together at
    most ``max_unzipped_mb`` (``ArchiveError`` otherwise)."""
    total = 0
    for info in members:
        if info.file_size > config.max_upload_bytes:
            raise ArchiveError(f"{path.name}: the member {info.filename} expands to {_mb(info.file_size)}; a frame "
                               f"may be at most {_mb(config.max_upload_bytes)} (max_upload_mb)")
        total += info.file_size
    if total > config.max_unzipped_bytes:
        raise ArchiveError(f"{path.name}: its {len(members)} frames expand to {_mb(total)}; the demo reads at most "
                           f"{_mb(config.max_unzipped_bytes)} from a zip (max_unzipped_mb)")


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, config: DemoConfig, budget: int) -> bytes:
    """The member's bytes, decompressed in chunks and stopped at ``min(max_upload_mb, budget)`` bytes
    whatever its header says (``ArchiveError`` past it; a header that understates its size also fails
    ``zipfile``'s CRC check)."""
    limit = min(config.max_upload_bytes, budget)
    parts, size = [], 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(min(CHUNK, limit + 1 - size)):
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise ArchiveError(f"{zf.filename and Path(zf.filename).name}: the member {info.filename} "
                                       f"expands to more than {_mb(limit)} (max_upload_mb / max_unzipped_mb) "
                                       "although its header says less; refused")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"{zf.filename and Path(zf.filename).name}: cannot decompress {info.filename} ({exc})") from exc
    return b"".join(parts)
