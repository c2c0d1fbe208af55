"""Tiny, real-architecture models with locally trained tokenizers, built deterministically.

For tests, the demo and benchmarks: no hub access is needed. :func:`build` writes a
``from_pretrained``-loadable folder, :func:`cached` builds it once per key, and
:func:`hf_cache_layout` lays a folder out as the HuggingFace hub cache does. Heavy
libraries (torch, transformers, sentencepiece) are imported only inside functions.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUILDER_VERSION = "6"

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, layers=2, heads=4, ffn=128, vocab=2000),
    "bench": dict(d_model=512, layers=6, heads=8, ffn=2048, vocab=16000),
}

#: COPA sentences of the XGLM model card example (en, zh and Haitian Creole, labelled "hi" there).
CARD_EXAMPLES: tuple[str, ...] = (
    "I wanted to conserve energy.", "I swept the floor in the unoccupied room.",
    "I shut off the light in the unoccupied room.", "The flame on the candle went out.",
    "I blew on the wick.", "I put a match to the wick.",
    "我想节约能源。", "我在空着的房间里扫了地板。", "我把空房间里的灯关了。",
    "蜡烛上的火焰熄灭了。", "我吹灭了灯芯。", "我把一根火柴放在灯芯上。",
    "M te vle konsève enèji.", "Mwen te fin baleye chanm lib la.", "Mwen te femen limyè nan chanm lib la.",
    "Flam bouji a te etenn.", "Mwen te soufle bouji a.", "Mwen te limen mèch bouji a.",
)  # fmt: skip

Builder = Callable[[Path, dict[str, int], int], None]
"""A family builder: ``(dest, size_params, seed)`` writes a complete model folder into ``dest``."""


def _specs_dir() -> Path:
    try:
        from importlib.resources import files

        installed = Path(str(files("babelplug.specs")))
        if (installed / "data" / "xcopa").is_dir():
            return installed
    except (ImportError, TypeError, ValueError):
        pass
    return Path(__file__).resolve().parent.parent / "specs"


def corpus() -> list[str]:
    """Training text: every XCOPA val premise/choice1/choice2, then the card examples (deduplicated, in order)."""
    lines: list[str] = []
    for path in sorted((_specs_dir() / "data" / "xcopa").glob("val.*.jsonl")):
        for row in path.read_text(encoding="utf-8").splitlines():
            if row.strip():
                item = json.loads(row)
                lines += [item["premise"], item["choice1"], item["choice2"]]
    return list(dict.fromkeys(lines + list(CARD_EXAMPLES)))


def _train_unigram(lines: list[str], vocab_size: int, seed: int, ids: tuple[int, int, int, int] = (0, 1, 2, -1), **options: Any) -> bytes:
    """Train a sentencepiece unigram model and return its bytes.

    ``ids`` are the (unk, bos, eos, pad) ids; -1 leaves one out. The default is
    XGLM's and Llama's layout; T5/mT5 use pad=0, eos=1, unk=2 and no bos.
    """
    import sentencepiece as spm

    unk, bos, eos, pad = ids
    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, model_type="unigram", vocab_size=vocab_size,
        character_coverage=1.0, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
        hard_vocab_limit=False, unk_id=unk, bos_id=bos, eos_id=eos, pad_id=pad, minloglevel=2,
        # Not XGLM's nmt_nfkc: tokenizers' Precompiled normalizer composes per grapheme, unlike
        # sentencepiece, so slow and fast ids differed on decomposed Tamil vowel signs in XCOPA.
        normalization_rule_name="identity", **options,
    )  # fmt: skip
    return out.getvalue()


def _build_xglm(dest: Path, size: dict[str, int], seed: int) -> None:
    """XGLM: sentencepiece unigram tokenizer (slow + fast files) and a seeded random ``XGLMForCausalLM``."""
    import torch
    from transformers import XGLMConfig, XGLMForCausalLM, XGLMTokenizer, XGLMTokenizerFast

    lines, max_pos = corpus(), 512
    # XGLM adds 4 fairseq specials (one replacing sp's <unk>) and 7 <madeupword>s: 8 more than sp.
    vocab_file = dest / "sentencepiece.bpe.model"
    vocab_file.write_bytes(_train_unigram(lines, size["vocab"] - 8, seed))
    slow = XGLMTokenizer(vocab_file=str(vocab_file), model_max_length=max_pos)
    fast = XGLMTokenizerFast(vocab_file=str(vocab_file), model_max_length=max_pos, from_slow=True)
    _check_same_ids(slow, fast, lines, "xglm")
    fast.save_pretrained(str(dest))  # tokenizer.json, tokenizer_config.json, special_tokens_map.json, .model

    # The embedding matrix is padded up to the size's nominal vocabulary (as mT5 and BLOOM pad
    # theirs) when the corpus supports fewer pieces: the bench model's LM head costs what 16k does.
    config = XGLMConfig(
        vocab_size=max(len(fast), size["vocab"]), d_model=size["d_model"], num_layers=size["layers"],
        attention_heads=size["heads"], ffn_dim=size["ffn"], max_position_embeddings=max_pos,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True, use_cache=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = XGLMForCausalLM(config).eval()
    model.save_pretrained(str(dest), safe_serialization=True)


def _check_same_ids(slow: Any, fast: Any, lines: list[str], family: str) -> None:
    if len(slow) != len(fast) or slow(lines).input_ids != fast(lines).input_ids:
        raise RuntimeError(f"{family}: slow and fast tokenizers disagree on the training corpus")


def _build_mt0(dest: Path, size: dict[str, int], seed: int) -> None:
    """mT0: an mT5 unigram tokenizer (pad=0, eos=1, unk=2, 100 extra ids) and ``MT5ForConditionalGeneration``.

    Only the fast tokenizer (``tokenizer.json``) is saved, as the mT0 card loads it with
    ``AutoTokenizer``: with this identity-normalised model the slow T5 tokenizer adds a
    lone leading ``▁`` the fast one does not, and two tokenizers that disagree would be a trap.
    """
    import tempfile

    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5TokenizerFast

    extra = 100
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "spiece.model"
        vocab_file.write_bytes(_train_unigram(corpus(), size["vocab"] - extra, seed, ids=(2, -1, 1, 0)))
        fast = T5TokenizerFast(vocab_file=str(vocab_file), extra_ids=extra, legacy=False, from_slow=True, model_max_length=512)
        fast.vocab_file = None  # save tokenizer.json only
        fast.save_pretrained(str(dest))
    heads = size["heads"]
    config = MT5Config(
        vocab_size=max(len(fast), size["vocab"]), d_model=size["d_model"], d_kv=size["d_model"] // heads,
        d_ff=size["ffn"], num_layers=size["layers"], num_decoder_layers=size["layers"], num_heads=heads,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    MT5ForConditionalGeneration(config).eval().save_pretrained(str(dest), safe_serialization=True)


def _build_bloomz(dest: Path, size: dict[str, int], seed: int) -> None:
    """BLOOMZ: a byte-level BPE tokenizer (<unk>=0, <s>=1, </s>=2, <pad>=3) and ``BloomForCausalLM``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BloomConfig, BloomForCausalLM, BloomTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    # Word-boundary splitting before byte-level BPE, as BLOOM's own pre-tokenizer does.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size["vocab"], special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(corpus(), trainer=trainer)
    fast = BloomTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>", padding_side="left", model_max_length=512)  # fmt: skip
    fast.save_pretrained(str(dest))
    config = BloomConfig(
        vocab_size=max(len(fast), size["vocab"]), hidden_size=size["d_model"], n_layer=size["layers"],
        n_head=size["heads"], bos_token_id=1, eos_token_id=2, pad_token_id=3,
        hidden_dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    BloomForCausalLM(config).eval().save_pretrained(str(dest), safe_serialization=True)


#: modelscope's ``configuration.json`` that selects the PolyLM text-generation pipeline.
POLYLM_CONFIGURATION = {
    "framework": "pytorch", "task": "text-generation",
    "model": {"type": "polylm"}, "pipeline": {"type": "polylm-text-generation"},
}  # fmt: skip

#: Remote code in the shape of PolyLM's: it imports ``SequenceSummary`` from
#: ``transformers.modeling_utils``, which transformers removed after 4.52.4.
POLYLM_REMOTE_CODE = '''"""Tiny stand-in for PolyLM's remote modeling code (written for babelplug's tests)."""
from transformers import GPT2LMHeadModel
from transformers.modeling_utils import SequenceSummary  # noqa: F401  (removed after transformers 4.52.4)


class PolyLMHeadModel(GPT2LMHeadModel):
    """GPT-2 style decoder, as PolyLM's."""
'''


def _build_polylm(dest: Path, size: dict[str, int], seed: int, remote_code: bool = False) -> None:
    """PolyLM: a GPT-2 style ``GPT2LMHeadModel`` with a Llama-style (slow) sentencepiece tokenizer.

    As in the real checkpoints, ``</s>`` is id 2 while ``config.eos_token_id`` is the last
    vocabulary id, and ``configuration.json`` selects modelscope's PolyLM pipeline. With
    ``remote_code`` the folder also carries ``modeling_polylm.py`` wired through ``auto_map``.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaTokenizer

    vocab_file = dest / "tokenizer.model"
    # PolyLM's chat markup and newlines are pieces of their own, so chat prompts round-trip.
    markup = ["<|user|>", "<|assistant|>", "\n"]
    vocab_file.write_bytes(_train_unigram(corpus(), size["vocab"], seed, user_defined_symbols=markup, remove_extra_whitespaces=False))
    # Slow tokenizer only: modelscope's PolyLM model loads it with use_fast=False, legacy=False.
    slow = LlamaTokenizer(vocab_file=str(vocab_file), legacy=False, add_bos_token=False, model_max_length=512)
    slow.save_pretrained(str(dest))
    vocab = max(len(slow), size["vocab"])
    config = GPT2Config(
        vocab_size=vocab, n_embd=size["d_model"], n_layer=size["layers"], n_head=size["heads"],
        n_inner=size["ffn"], n_positions=512, bos_token_id=1, eos_token_id=vocab - 1,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    if remote_code:
        (dest / "modeling_polylm.py").write_text(POLYLM_REMOTE_CODE, encoding="utf-8")
        config.auto_map = {"AutoModelForCausalLM": "modeling_polylm.PolyLMHeadModel"}
        config.architectures = ["PolyLMHeadModel"]
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).eval().save_pretrained(str(dest), safe_serialization=True)
    (dest / "configuration.json").write_text(json.dumps(POLYLM_CONFIGURATION, indent=2) + "\n", encoding="utf-8")


FAMILIES: dict[str, Builder] = {
    "xglm": _build_xglm,
    # An XGLM fine-tune: same architecture and tokenizer, other weights.
    "wangchanglm": lambda dest, size, seed: _build_xglm(dest, size, seed + 1000),
    "mt0": _build_mt0,
    "bloomz": _build_bloomz,
    "polylm": _build_polylm,
    "polylm-remote": lambda dest, size, seed: _build_polylm(dest, size, seed, remote_code=True),
}
"""Builders by model family; adding a family means adding one builder here."""


def build(family: str, dest: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a complete tiny model folder for ``family`` into ``dest`` (created if needed); return ``dest``."""
    if family not in FAMILIES:
        raise KeyError(f"unknown tiny model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    if size not in SIZES:
        raise KeyError(f"unknown tiny model size {size!r}; known: {', '.join(SIZES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    FAMILIES[family](dest, dict(SIZES[size]), seed)
    return dest


def cached(family: str, *, size: str = "tiny", seed: int = 0, root: str | Path | None = None) -> Path:
    """Build once under ``root`` (default ``$BABELPLUG_TINY_CACHE`` or ``~/.cache/babelplug/tiny``); return the folder.

    The build goes to a temporary sibling that is renamed into place, so a concurrent or
    aborted build never leaves a half-written folder under the final name.
    """
    base = Path(root or os.environ.get("BABELPLUG_TINY_CACHE") or Path.home() / ".cache" / "babelplug" / "tiny")
    final = base.expanduser() / f"{family}-{size}-seed{seed}-v{BUILDER_VERSION}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(family, tmp, size=size, seed=seed)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not lost to a concurrent builder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hf_cache_layout(model_dir: Path, cache_root: Path, repo_id: str, *, revision: str = "main") -> Path:
    """Copy ``model_dir`` into the HF hub cache layout under ``cache_root`` as ``repo_id``; return the snapshot.

    Files go to ``blobs/<sha256>``, ``snapshots/<commit>/`` holds relative symlinks to them (copies
    where symlinks are unavailable) and ``refs/<revision>`` names the commit, a sha1 of the sorted
    file hashes, so the same files always give the same commit.
    """
    model_dir, repo = Path(model_dir), Path(cache_root) / f"models--{repo_id.replace('/', '--')}"
    files = {p.relative_to(model_dir).as_posix(): _sha256(p) for p in sorted(model_dir.rglob("*")) if p.is_file()}
    commit = hashlib.sha1("".join(f"{name}\0{h}\n" for name, h in sorted(files.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        blob, link = repo / "blobs" / digest, snapshot / name
        if not blob.exists():
            shutil.copyfile(model_dir / name, blob.with_suffix(".incomplete"))
            os.replace(blob.with_suffix(".incomplete"), blob)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            shutil.copyfile(blob, link)
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit, encoding="ascii")
    return snapshot


def ms_cache_layout(model_dir: Path, cache_root: Path, repo_id: str, *, revision: str = "master", legacy: bool = False) -> Path:
    """Copy ``model_dir`` into the ModelScope cache layout under ``cache_root`` as ``repo_id``; return the folder.

    The current layout (modelscope >= 1.38) is ``models/{owner}--{name}/snapshots/{revision}/``; the
    legacy one (``legacy=True``, modelscope <= 1.37) is ``models/{owner}/{name}`` with the dots of
    ``name`` written ``___`` and no revision. Files are plain copies, as modelscope writes them.
    """
    owner, _, name = repo_id.partition("/")
    models = Path(cache_root) / "models"
    dest = models / owner / name.replace(".", "___") if legacy else models / f"{owner}--{name}" / "snapshots" / revision
    shutil.copytree(model_dir, dest, dirs_exist_ok=True)
    return dest


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m babelplug.tiny", description="Build a tiny model folder.")
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("dest", type=Path)
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.family, args.dest, size=args.size, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
