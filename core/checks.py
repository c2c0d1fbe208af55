"""Cheap checks of a model folder and its load options, run before any weights load.

Each check reads small files only (``config.json``, ``tokenizer_config.json``,
safetensors headers) or asks torch which devices exist, and raises a typed error
that names the file, field or option: a broken ``config.json``, a folder without
weights, a truncated safetensors file, pickle weights loaded without consent, an
unavailable device, a missing chat template, an ``eos_token_id`` outside the
vocabulary. :func:`check_script` checks the ``first_token_script`` generation
parameter. Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, OptionError, close_matches

#: Weight files ``from_pretrained`` reads, in its order of preference.
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip

PICKLE_HINT = (
    "pickle files can run arbitrary code when loaded, so babelplug loads them only if you opt in for this model "
    "with the load option allow_pickle=True (-o allow_pickle=true, or allow_pickle = true in "
    '[models."NAME"].options), or convert them to safetensors'
)


# -- JSON files -------------------------------------------------------------
def read_json_object(file: Path) -> dict[str, Any] | None:
    """The JSON object in ``file``; None if absent; ModelLoadError if unreadable, invalid or not an object."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelLoadError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{file}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: expected a JSON object, got {_json_kind(data)}")
    return data


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def read_config(folder: Path) -> dict[str, Any] | None:
    """``config.json`` of ``folder`` (None if absent); ModelLoadError if it is broken."""
    return read_json_object(Path(folder) / "config.json")


def require_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a transformers folder: present, a JSON object, with a string ``model_type``."""
    folder = Path(folder)
    config = read_config(folder)
    if config is None:
        raise ModelLoadError(f"{folder}: not a model folder (no readable config.json with a model_type)")
    kind = config.get("model_type")
    if not isinstance(kind, str) or not kind:
        got = "no 'model_type' field" if kind is None else f"'model_type' {kind!r} is not a non-empty string"
        raise ModelLoadError(f"{folder / 'config.json'}: {got}; it must name the architecture (such as \"xglm\")")
    return config


# -- weights ----------------------------------------------------------------
@dataclass
class Weights:
    """The weight files ``from_pretrained`` will read from a folder."""

    folder: Path
    safetensors: list[Path] = field(default_factory=list)
    pickles: list[Path] = field(default_factory=list)

    @property
    def uses_pickle(self) -> bool:
        """Whether loading reads pickle files (there are no safetensors to prefer)."""
        return not self.safetensors and bool(self.pickles)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """``use_safetensors=True`` where safetensors exist, so they win over pickles."""
        return {"use_safetensors": True} if self.safetensors else {}


def _shards(folder: Path, index_name: str) -> list[Path]:
    """Files an index's ``weight_map`` names, each checked to exist."""
    index = read_json_object(folder / index_name) or {}
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"{folder / index_name}: expected a non-empty 'weight_map' of tensor names to file names")
    shards = [folder / name for name in dict.fromkeys(weight_map.values())]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise ModelLoadError(f"{folder / index_name}: names shard files that are missing: {', '.join(missing)}")
    return shards


def find_weights(folder: Path) -> Weights:
    """The folder's weight files (safetensors, else pickle), or ModelLoadError saying what was looked for."""
    folder = Path(folder)
    weights = Weights(folder)
    if (folder / SAFETENSORS).is_file():
        weights.safetensors = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        weights.safetensors = _shards(folder, SAFETENSORS_INDEX)
    if (folder / PICKLE).is_file():
        weights.pickles = [folder / PICKLE]
    elif (folder / PICKLE_INDEX).is_file() and not weights.safetensors:
        weights.pickles = _shards(folder, PICKLE_INDEX)
    if not weights.safetensors and not weights.pickles:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf"})
        found = f"; found only {', '.join(others)}, which from_pretrained does not read" if others else ""
        raise ModelLoadError(f"{folder}: no weight file: looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, {PICKLE} and {PICKLE_INDEX}{found}")
    return weights


def check_safetensors(file: Path) -> None:
    """Check a safetensors file from its header alone: length, JSON, and every tensor inside the file."""
    file = Path(file)
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{file}: {size} bytes, too short for a safetensors file (truncated?)")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise ModelLoadError(
                f"{file}: header length {length} runs past the end of the file ({size} bytes): truncated or not a safetensors file"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{file}: the header is not JSON: corrupt or not a safetensors file") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{file}: the header is not a JSON object: corrupt or not a safetensors file")
    data = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise ModelLoadError(f"{file}: tensor {name!r} has no valid data_offsets in the header: corrupt file")
        if offsets[1] > data:
            raise ModelLoadError(
                f"{file}: tensor {name!r} ends at byte {offsets[1]} of the data, past its end ({data} bytes): the file is truncated"
            )
        shape, width = info.get("shape"), DTYPE_BYTES.get(str(info.get("dtype")))
        if width and isinstance(shape, list) and all(isinstance(d, int) for d in shape):
            count = 1
            for d in shape:
                count *= d
            if count * width != offsets[1] - offsets[0]:
                raise ModelLoadError(
                    f"{file}: tensor {name!r} ({info['dtype']} {shape}) needs {count * width} bytes but its data_offsets span "
                    f"{offsets[1] - offsets[0]}: corrupt header"
                )


def check_weights(folder: Path, options: Mapping[str, Any]) -> Weights:
    """Find the weights, check safetensors headers, and refuse pickle-only folders without ``allow_pickle``."""
    weights = find_weights(folder)
    for file in weights.safetensors:
        check_safetensors(file)
    if weights.uses_pickle and not options.get("allow_pickle"):
        names = ", ".join(str(p) for p in weights.pickles[:3]) + (", ..." if len(weights.pickles) > 3 else "")
        raise ModelLoadError(f"{names}: refused: the folder holds only pickle weights; {PICKLE_HINT}")
    return weights


def load_failure(weights: Weights, exc: BaseException) -> ModelLoadError | None:
    """A typed error for ``from_pretrained`` failing on the weight files themselves, else None."""
    import pickle

    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    detail = (str(root).strip().splitlines() or [""])[0].split(". ")[0][:200]
    detail = f"{type(root).__name__}: {detail}" if detail else type(root).__name__
    unreadable = isinstance(exc, (pickle.UnpicklingError, EOFError)) or (
        isinstance(exc, OSError) and "Unable to load weights" in str(exc)
    )
    if weights.uses_pickle and unreadable:
        names = ", ".join(str(p) for p in weights.pickles)
        return ModelLoadError(f"{names}: cannot load these pickle weights (read because allow_pickle=True): corrupt or not a torch checkpoint ({detail})")
    if weights.safetensors and type(exc).__name__ == "SafetensorError" and "deserializ" in str(exc):
        names = ", ".join(str(p) for p in weights.safetensors)
        return ModelLoadError(f"{names}: cannot load these safetensors weights: corrupt file ({detail})")
    return None


# -- options ----------------------------------------------------------------
def _devices(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(option path, device) pairs the options ask for: ``device`` and ``device_map`` values."""
    asked: list[tuple[str, str]] = []
    if isinstance(options.get("device"), str):
        asked.append(("$.device", options["device"]))
    device_map = options.get("device_map")
    if isinstance(device_map, str):
        asked.append(("$.device_map", device_map))
    elif isinstance(device_map, dict):
        for key, value in device_map.items():
            where = f"$.device_map[{json.dumps(key)}]"
            if isinstance(value, int) and not isinstance(value, bool):
                asked.append((where, f"cuda:{value}"))
            elif isinstance(value, str):
                asked.append((where, value))
    return asked


def check_devices(options: Mapping[str, Any], backend: str) -> None:
    """``cuda``, ``cuda:N`` and ``mps`` in ``device``/``device_map`` must exist on this machine."""
    wanted = [(where, dev) for where, dev in _devices(options) if dev.split(":")[0] in ("cuda", "mps")]
    if not wanted:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for where, dev in wanted:
        kind, _, index = dev.partition(":")
        if kind == "mps" and not torch.backends.mps.is_available():
            problem = "torch sees no MPS (Apple GPU) device on this machine"
        elif kind == "cuda" and count == 0:
            problem = "torch sees no CUDA device on this machine"
        elif kind == "cuda" and index.isdigit() and int(index) >= count:
            problem = f"this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})"
        else:
            continue
        raise OptionError(f"load options of backend {backend!r}", where, f"{dev!r} is not available: {problem}; use 'cpu' or leave it out")


def check_chat_template(folder: Path, options: Mapping[str, Any], backend: str, default: str) -> None:
    """Chat format ``template`` needs a chat template in the tokenizer files."""
    if options.get("chat_format", default) != "template":
        return
    folder = Path(folder)
    tok_config = read_json_object(folder / "tokenizer_config.json") or {}
    if tok_config.get("chat_template") or (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return
    if tok_config.get("auto_map") and options.get("trust_remote_code"):
        return  # the tokenizer's own code may provide one
    raise OptionError(
        f"load options of backend {backend!r}", "$.chat_format",
        f"'template' needs the tokenizer's chat template, but {folder} has none (no chat_template in tokenizer_config.json, "
        "no chat_template.jinja or chat_template.json); choose a registered chat format instead",
    )  # fmt: skip


def check_eos(folder: Path, config: Mapping[str, Any]) -> None:
    """``eos_token_id`` in ``config.json`` and ``generation_config.json`` must lie inside the vocabulary."""
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        return
    folder = Path(folder)
    for name in ("config.json", "generation_config.json"):
        source = config if name == "config.json" else read_json_object(folder / name) or {}
        eos = source.get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos]
        bad = [i for i in ids if isinstance(i, int) and not isinstance(i, bool) and not 0 <= i < vocab]
        if bad:
            raise ModelLoadError(
                f"{folder / name}: eos_token_id {bad[0]} is outside the vocabulary (config.json vocab_size {vocab}: ids 0 to {vocab - 1})"
            )


def check_folder(folder: Path, options: Mapping[str, Any], backend: str, default_chat_format: str = "plain") -> Weights:
    """Every pre-load check of a transformers model folder and its options; returns its weights."""
    config = require_config(folder)
    check_devices(options, backend)
    weights = check_weights(folder, options)
    check_eos(folder, config)
    check_chat_template(folder, options, backend, default_chat_format)
    return weights


# -- generation parameters --------------------------------------------------
#: Script names whose characters are not named after them (as :func:`babelplug.hf.in_script` matches them).
SCRIPT_ALIASES = ("han", "japanese")

_NAME_ENDS = frozenset("LETTER CHARACTER SYLLABLE SYLLABICS DIGIT VOWEL CONSONANT LIGATURE SMALL CAPITAL IDEOGRAPH".split())


@lru_cache(maxsize=None)
def known_script(script: str) -> bool:
    """Whether some character's Unicode name starts with ``script`` (``"thai"``: ``THAI CHARACTER KO KAI``)."""
    import unicodedata

    if script.lower() in SCRIPT_ALIASES:
        return True
    prefix = script.upper() + " "
    return any(unicodedata.name(chr(cp), "").startswith(prefix) for cp in range(0x110000))


@lru_cache(maxsize=1)
def script_names() -> frozenset[str]:
    """Script-like prefixes of Unicode names (the words before LETTER, CHARACTER, ...), for suggestions."""
    import unicodedata

    names = set(SCRIPT_ALIASES)
    for cp in range(0x110000):
        words = unicodedata.name(chr(cp), "").replace("-", " ").split()
        for i, word in enumerate(words):
            if word in _NAME_ENDS:
                if i:
                    names.add(" ".join(words[:i]).lower())
                break
    return frozenset(names)


def check_script(params: Mapping[str, Any]) -> None:
    """``first_token_script`` must name a known Unicode script; the error lists close matches."""
    script = params.get("first_token_script")
    if isinstance(script, str) and script and not known_script(script):
        raise OptionError(
            "generation parameters", "$.first_token_script",
            f"unknown script {script!r}: no Unicode character name starts with {script.upper()!r}{close_matches(script.lower(), script_names())}",
        )  # fmt: skip
