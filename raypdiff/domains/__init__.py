"""The domains a zoo can hold, siblings behind one interface (raypdiff.domains.base): text tasks here, text-to-image
styles in raypdiff.vision (an optional extra, imported when asked for)."""
from __future__ import annotations

from raypdiff.domains.base import (Domain, Run, UserInput, adapter_folders, require_text, sampling_facts,
                                   score_captures, tested_captures, write_manifest)
from raypdiff.domains.text import AdapterWriter, TextDomain, load_splits

__all__ = ["AdapterWriter", "Domain", "Run", "TextDomain", "UserInput", "adapter_folders", "domain_for", "load_splits",
           "require_text", "sampling_facts", "score_captures", "tested_captures", "write_manifest"]


def domain_for(name: str) -> Domain:
    """The domain called `name` (Config.domain, or a zoo's meta.json "domain")."""
    if name == "vision":
        from raypdiff.vision.domain import StyleDomain

        return StyleDomain()
    return TextDomain()
