"""Model catalog entries: named models, their backend, per-hub ids and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schemas import read_json, schema, validate


@dataclass(frozen=True)
class HubRef:
    """Where a model lives on one hub."""

    id: str
    revision: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One catalog entry (see ``specs/model.schema.json``)."""

    name: str
    backend: str
    aliases: tuple[str, ...] = ()
    hubs: Mapping[str, HubRef] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    chat_format: str | None = None
    description: str = ""
    parameters: str = ""
    """Parameter count as the model card states it (``"564M"``)."""
    languages: tuple[str, ...] = ()
    source: str = ""
    """The file or plugin the entry came from."""

    def __post_init__(self) -> None:
        hubs = {k: v if isinstance(v, HubRef) else HubRef(v["id"], v.get("revision")) for k, v in self.hubs.items()}
        object.__setattr__(self, "hubs", hubs)
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "languages", tuple(self.languages))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "", backend: str | None = None) -> ModelEntry:
        """Build an entry from its JSON form, checked against the schema."""
        doc = dict(doc)
        if backend and "backend" not in doc:
            doc["backend"] = backend
        validate(doc, {"$defs": schema("model")["$defs"], "$ref": "#/$defs/entry"}, source or f"model entry {doc.get('name')!r}")
        return cls(
            name=doc["name"],
            backend=doc["backend"],
            aliases=tuple(doc.get("aliases", ())),
            hubs=doc.get("hubs", {}),
            options=dict(doc.get("options", {})),
            chat_format=doc.get("chat_format"),
            description=doc.get("description", ""),
            parameters=doc.get("parameters", ""),
            languages=tuple(doc.get("languages", ())),
            source=source,
        )


def read_catalog(path: Path, *, backend: str | None = None) -> list[ModelEntry]:
    """Read and check a catalog file ``{"models": [...]}``."""
    doc = read_json(path)
    if backend and isinstance(doc, dict) and isinstance(doc.get("models"), list):
        doc["models"] = [{"backend": backend, **m} if isinstance(m, dict) else m for m in doc["models"]]
    validate(doc, schema("model"), str(path))
    return [
        ModelEntry.from_dict(item, source=f"{path}: $.models[{i}]", backend=backend)
        for i, item in enumerate(doc["models"])
    ]
