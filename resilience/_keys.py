"""Redis key layout and the reversible encoding of provider and model names.

Every key of one provider shares the hash tag ``{<encoded provider>}``, so each script touches
keys of a single Redis Cluster slot, and providers spread over the cluster::

    <prefix>:{<provider>}:t:<model>   hash   state of one target
    <prefix>:{<provider>}:p           hash   provider-wide block (auth, permission, quota)
    <prefix>:{<provider>}:idx         zset   encoded models, scored by last write (ms)
    <prefix>:{<provider>}:ev          stream capped log of transitions
    <prefix>:{<provider>}:evn         string number of the last transition logged (1, 2, ...)
    <prefix>:transitions              pub/sub channel announcing every transition

Names are percent-encoded: every byte of the UTF-8 form outside ``[A-Za-z0-9._-]`` becomes
``%XX``. The result holds no ``{``, ``}``, ``:`` or glob characters, so the hash tag is exact,
the fields split unambiguously and a SCAN pattern cannot be confused by a hostile name.
"""

from __future__ import annotations

import functools
from urllib.parse import unquote

from ._record import Record
from ._types import Target

__all__ = ["KeySpace", "decode_name", "encode_name"]

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


@functools.lru_cache(maxsize=16384)
def encode_name(name: str) -> str:
    """Encodes a provider or model name for use inside a key (reversible; cached)."""
    raw = name.encode("utf-8", "surrogatepass")
    if all(b in _SAFE for b in raw):
        return name
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


def decode_name(encoded: str) -> str:
    """Inverse of :func:`encode_name`."""
    if "%" not in encoded:
        return encoded
    return unquote(encoded, encoding="utf-8", errors="surrogatepass")


class KeySpace(Record):
    """Builds the keys of one key prefix (see the module docstring for the layout)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def channel(self) -> str:
        """The pub/sub channel announcing transitions."""
        return f"{self.prefix}:transitions"

    @property
    def index_pattern(self) -> str:
        """SCAN pattern matching every provider's index key."""
        return f"{self.prefix}:{{*}}:idx"

    @property
    def snapshot_lock(self) -> str:
        """Key of the snapshot job's leader lock."""
        return f"{self.prefix}:snapshot:lock"

    def tag(self, provider: str) -> str:
        return f"{self.prefix}:{{{encode_name(provider)}}}"

    def target(self, target: Target) -> str:
        return f"{self.tag(target.provider)}:t:{encode_name(target.model)}"

    def provider(self, provider: str) -> str:
        return f"{self.tag(provider)}:p"

    def index(self, provider: str) -> str:
        return f"{self.tag(provider)}:idx"

    def events(self, provider: str) -> str:
        return f"{self.tag(provider)}:ev"

    @property
    def provider_pattern(self) -> str:
        """SCAN pattern matching every provider's index and provider hash (``:idx``, ``:p``)."""
        return f"{self.prefix}:{{*}}:[ip]*"

    def provider_script_keys(self, provider: str) -> list[str]:
        """KEYS of a provider-wide script call: the target key (of the empty model) is
        passed for the layout's sake and never touched."""
        tag = self.tag(provider)
        return [f"{tag}:t:", f"{tag}:p", f"{tag}:idx", f"{tag}:ev", f"{tag}:evn"]

    def provider_of_key(self, key: str) -> str | None:
        """The provider whose index or provider hash this is, or None for a foreign key."""
        for suffix in ("}:idx", "}:p"):
            if key.endswith(suffix):
                return self._provider_in(key, suffix)
        return None

    def script_keys(self, target: Target) -> list[str]:
        """KEYS of every state-changing script, in the order common.lua expects."""
        tag = self.tag(target.provider)
        model = encode_name(target.model)
        return [f"{tag}:t:{model}", f"{tag}:p", f"{tag}:idx", f"{tag}:ev", f"{tag}:evn"]

    def provider_of_index(self, key: str) -> str | None:
        """The provider whose index key this is, or None for a foreign key."""
        return self._provider_in(key, "}:idx")

    def _provider_in(self, key: str, suffix: str) -> str | None:
        head = f"{self.prefix}:{{"
        if not (key.startswith(head) and key.endswith(suffix)):
            return None
        encoded = key[len(head) : -len(suffix)]
        if not encoded or "{" in encoded or "}" in encoded:
            return None
        return decode_name(encoded)
