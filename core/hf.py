"""A reusable base for backends built on HuggingFace transformers.

Plugins for transformers model families subclass :class:`TransformersBackend`
and adjust a few class attributes or methods; the XGLM plugin is an example.
Importing this module is cheap: torch and transformers load in :meth:`load`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .backend import Backend, Message, Score
from .errors import MissingDependencyError, ModelLoadError, OptionError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Load options every transformers backend accepts.
TRANSFORMERS_OPTIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dtype": {
            "enum": ["auto", "float32", "bfloat16", "float16"],
            "description": "Weights and compute dtype (default float32); 'auto' takes the checkpoint's, but float32 for a float16 checkpoint on CPU.",
        },
        "device": {"type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?|mps)$"},
        "device_map": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "max_memory": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
        "batch_size": {"type": "integer", "minimum": 1, "description": "Requests per forward pass (default 32)."},
        "offload_folder": {"type": "string", "description": "Folder for weights device_map offloads to disk."},
        "low_cpu_mem_usage": {"type": "boolean"},
        "quantization": {"enum": ["8bit", "4bit"], "description": "bitsandbytes quantization (BitsAndBytesConfig); needs babelplug[quant]."},
        "load_in_8bit": {"type": "boolean", "description": "The model cards' spelling of quantization='8bit'."},
        "load_in_4bit": {"type": "boolean", "description": "Spelling of quantization='4bit'."},
        "trust_remote_code": {"type": "boolean", "description": "Run code shipped in the model folder (off unless you opt in)."},
        "chat_format": {"type": "string", "description": "A registered chat format, or 'template'."},
    },
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules as None: import blocked
        return False


def quantization(options: Mapping[str, Any]) -> str | None:
    """'8bit', '4bit' or None, from ``quantization`` or the ``load_in_*bit`` aliases."""
    if options.get("load_in_8bit"):
        return "8bit"
    if options.get("load_in_4bit"):
        return "4bit"
    return options.get("quantization")


def pad_rows(rows: Sequence[Sequence[int]], value: int, *, left: bool = False, min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one ``[batch, width]`` tensor padded with ``value`` (on the left or right), and its mask."""
    import torch

    width = max([min_width, *map(len, rows)])
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(list(row))
            mask[i, span] = 1
    return ids, mask


def batched(items: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices ordered by decreasing length (stable), for batches with little padding."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class TransformersBackend(Backend):
    """Shared load/tokenize/score/generate/chat for transformers models.

    Subclasses set ``name``, ``model_types`` and, for other architectures,
    ``auto_class``. Causal scoring runs one forward over context plus
    continuation and applies the LM head only at continuation positions.
    """

    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    default_chat_format: ClassVar[str] = "plain"
    default_batch_size: ClassVar[int] = 32
    default_generation: ClassVar[dict[str, Any]] = {}
    """Generation parameters used when the caller leaves them out (a model card's defaults)."""
    options_schema = TRANSFORMERS_OPTIONS

    def __init__(self, path: Path, options: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel):
        self.path, self.options = Path(path), dict(options)
        self.tokenizer, self.model = tokenizer, model
        self.batch_size = int(options.get("batch_size", self.default_batch_size))

    # -- load -------------------------------------------------------------
    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        """Quantization needs bitsandbytes: say which extra to install, before loading."""
        if quantization(options) and not installed("bitsandbytes"):
            raise MissingDependencyError(
                f"backend {cls.name!r}: {quantization(options)} quantization needs bitsandbytes; "
                "install it with: pip install 'babelplug[quant]'"
            )
        asked = {b for b in (options.get("quantization"), "8bit" * bool(options.get("load_in_8bit")), "4bit" * bool(options.get("load_in_4bit"))) if b}
        if len(asked) > 1:
            raise OptionError(f"load options of backend {cls.name!r}", "$", f"conflicting quantization: {' and '.join(sorted(asked))}")

    @classmethod
    def load(cls, path: Path, **options: Any) -> TransformersBackend:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        cls.validate_options(options)
        import torch
        import transformers

        tokenizer = cls.load_tokenizer(path, options)
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=options.get("trust_remote_code", False))
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:
            raise ModelLoadError(
                f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                f"(config.json vocab_size) has {vocab}: tokenizer and weights do not belong together"
            )
        try:
            model = getattr(transformers, cls.auto_class).from_pretrained(path, **cls.model_kwargs(options))
        except Exception as exc:
            if "device disk is invalid" in str(exc):  # transformers 4.57 cannot put *every* weight on disk
                raise ModelLoadError(
                    f"{path}: max_memory leaves no room in memory, so device_map='auto' would offload the whole model "
                    "to disk, which transformers cannot load; allow at least the embeddings in memory"
                ) from None
            raise
        if "device" in options and "device_map" not in options and not quantization(options):
            model.to(options["device"])
        if options.get("dtype") == "auto" and model.dtype == torch.float16 and model.device.type == "cpu" and not quantization(options):
            model.float()  # a float16 checkpoint under dtype='auto': never fp16 compute on CPU
        model.eval()
        return cls(path, options, tokenizer, model)

    @classmethod
    def load_tokenizer(cls, path: Path, options: Mapping[str, Any]) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=options.get("trust_remote_code", False))

    @classmethod
    def model_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for the validated options."""
        import torch

        dtype = options.get("dtype", "float32")  # by default never fp16 on CPU: slowest there, and lossy
        kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        for key in ("device_map", "max_memory", "offload_folder", "low_cpu_mem_usage", "trust_remote_code"):
            if key in options:
                kwargs[key] = options[key]
        bits = quantization(options)
        if bits:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=bits == "8bit", load_in_4bit=bits == "4bit")
        return kwargs

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # -- tokenize -----------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode([list(i) for i in ids], skip_special_tokens=True)

    def prefix_ids(self) -> list[int]:
        """Tokens that stand for an empty context (the family's start token)."""
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [start] if start is not None else []

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Token pairs as lm-evaluation-harness makes them: ``encode(context)``, then
        ``encode(context + continuation)`` past ``len(encode(context))``.

        Trailing whitespace of the context moves to the continuation, as in
        lm-evaluation-harness, so both tokenize the same way. Where the whole text
        tokenizes differently across the boundary (scripts without spaces, such as
        Thai), the context keeps its own tokens, as in lm-evaluation-harness; every
        choice of an item then has the same context tokens.
        """
        contexts, wholes = [], []
        for context, continuation in requests:
            stripped = context.rstrip()
            contexts.append(stripped)
            wholes.append(stripped + context[len(stripped) :] + continuation)
        ctx_ids = self.tokenize(contexts)
        whole_ids = self.tokenize(wholes)
        return [(ctx or self.prefix_ids(), whole[len(ctx) :]) for ctx, whole in zip(ctx_ids, whole_ids)]

    # -- score --------------------------------------------------------------
    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Score in batches of ``batch_size`` requests, longest first.

        Requests with the same context (the choices of one item) go into one batch
        when the model can share it (see :meth:`score_batch`).
        """
        pairs = self.encode_pairs(requests)
        if len({tuple(ctx) for ctx, _ in pairs}) < len(pairs) and self._packing():
            groups = _context_groups(pairs, self.batch_size)
        else:
            groups = [[i] for i in range(len(pairs))]
        groups = [groups[g] for g in longest_first([_row_length(pairs, g) for g in groups])]
        results: list[Score | None] = [None] * len(pairs)
        for chunk in _fill(groups, self.batch_size):
            for i, result in zip(chunk, self.score_batch([pairs[i] for i in chunk])):
                results[i] = result
        return results  # type: ignore[return-value]

    def score_batch(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Score]:
        """Score one batch of token pairs: right padding, head only on continuations.

        Where the model allows it, pairs with the same context share one row: the
        context once, then each continuation as a branch that sees the context and
        itself only (a tree attention mask; positions restart after the context).
        Exact: every token sees what it would see alone.
        """
        import torch

        mode = self._packing() if len({tuple(ctx) for ctx, _ in pairs}) < len(pairs) else ""
        rows: dict[Any, list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            rows.setdefault(tuple(ctx) if mode else i, []).append(i)
        ids_rows, pos_rows, seg_rows = [], [], []
        picks: list[tuple[int, int]] = []  # (row, column) of each hidden state the head needs
        sel: list[list[int]] = [[] for _ in pairs]  # per pair: the pick predicting each continuation token
        for r, members in enumerate(rows.values()):
            ctx = pairs[members[0]][0]
            ids, pos, seg = list(ctx), list(range(len(ctx))), [0] * len(ctx)
            first = -1  # the context's last position predicts every branch's first token
            for branch, i in enumerate(members, 1):
                cont = pairs[i][1]
                if not cont:
                    continue
                if first < 0:
                    picks.append((r, len(ctx) - 1))
                    first = len(picks) - 1
                sel[i].append(first)
                for j, tok in enumerate(cont[:-1]):
                    sel[i].append(len(picks))
                    picks.append((r, len(ids)))
                    ids.append(tok)
                    pos.append(len(ctx) + j)
                    seg.append(branch)
            ids_rows.append(ids)
            pos_rows.append(pos)
            seg_rows.append(seg)
        width = max(len(ids) for ids in ids_rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in ids_rows])
        segments = torch.tensor([seg + [-1] * (width - len(seg)) for seg in seg_rows])
        position_ids = None
        if len(rows) < len(pairs):
            mask = _tree_mask(segments, mode, self.model.dtype)
            position_ids = torch.tensor([pos + [0] * (width - len(pos)) for pos in pos_rows]).to(self.device)
        else:
            mask = (segments >= 0).long()
        targets = torch.tensor([t for (_, cont) in pairs for t in cont], dtype=torch.long)
        with torch.inference_mode():
            args = (input_ids.to(self.device), mask.to(self.device))
            hidden = self.hidden_states(*args) if position_ids is None else self.hidden_states(*args, position_ids)
            if picks:
                where = torch.tensor(picks, dtype=torch.long, device=hidden.device)
                logits = self.model.get_output_embeddings()(hidden[where[:, 0], where[:, 1]]).float()
            else:
                logits = torch.zeros((0, 1), device=hidden.device)
            index = torch.tensor([k for s in sel for k in s], dtype=torch.long, device=logits.device)
            target = targets.to(logits.device)
            token_lp = logits.log_softmax(-1)[index, target].double().tolist()
            greedy = (logits.argmax(-1)[index] == target).tolist()
        out, start = [], 0
        for s in sel:
            n = len(s)
            out.append(Score(sum(token_lp[start : start + n]) if n else 0.0, n, all(greedy[start : start + n])))
            start += n
        return out

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Last hidden states of the base model for right-padded inputs.

        ``attention_mask`` is ``[batch, seq]``, or ``[batch, 1, seq, seq]`` with
        ``position_ids`` for rows that share a context (see :meth:`score_batch`).
        """
        extra = {} if position_ids is None else {"position_ids": position_ids}
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).last_hidden_state

    def _packing(self) -> str:
        """How the model takes a tree mask: 'binary' (1 attends), 'additive', or '' (not at all).

        Probed once per model: one packed row (a context and two branches) must give
        the hidden states of the two plain rows it stands for.
        """
        mode = getattr(self, "_packing_mode", None)
        if mode is None:
            mode = self._packing_mode = self._probe_packing()
        return mode

    def _probe_packing(self) -> str:
        import warnings

        import torch

        if getattr(self.model.config, "is_encoder_decoder", False):
            return ""
        base = self.model.get_input_embeddings().num_embeddings // 3
        a, b, c, d, e = (base + k for k in range(5))
        dev = self.device
        tol = 1e-4 if self.model.dtype == torch.float32 else 3e-2
        try:
            with torch.inference_mode():
                one = self.hidden_states(torch.tensor([[a, b, c]], device=dev), torch.ones(1, 3, dtype=torch.long, device=dev))
                two = self.hidden_states(torch.tensor([[a, b, d, e]], device=dev), torch.ones(1, 4, dtype=torch.long, device=dev))
        except Exception:  # noqa: BLE001 - a model that cannot run the probe cannot pack
            return ""
        expected = torch.cat([one[0], two[0, 2:]])
        segments = torch.tensor([[0, 0, 1, 2, 2]])
        for mode in ("binary", "additive"):
            try:
                with torch.inference_mode(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. BLOOM warns that it ignores position_ids
                    got = self.hidden_states(
                        torch.tensor([[a, b, c, d, e]], device=dev),
                        _tree_mask(segments, mode, self.model.dtype).to(dev),
                        torch.tensor([[0, 1, 2, 2, 3]], device=dev),
                    )[0]
            except Exception:  # noqa: BLE001 - this mask convention is not the model's
                continue
            if got.shape == expected.shape and torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol):
                return mode
        return ""

    # -- generate -----------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: Mapping[str, Any]) -> list[str]:
        import torch

        kwargs = self.generation_kwargs(params)
        if params.get("seed") is not None:
            torch.manual_seed(params["seed"])
        encoded = self.tokenize(prompts)
        results: list[str] = [""] * len(prompts)
        for chunk in batched(longest_first([len(e) for e in encoded]), self.batch_size):
            texts = self.generate_batch([encoded[i] for i in chunk], kwargs)
            for i, text in zip(chunk, texts):
                results[i] = cut_at_stop(text, params.get("stop", ()))
        return results

    def generate_batch(self, prompts: Sequence[list[int]], kwargs: Mapping[str, Any]) -> list[str]:
        """Left-pad token prompts, generate, and decode the completions."""
        input_ids, mask = pad_rows(prompts, self.pad_id, left=True)
        width = input_ids.shape[1]
        out = self.run_generate(input_ids, mask, kwargs, prompt_width=width)
        return self.decode_completions(prompts, out, width)

    def decode_completions(self, prompts: Sequence[list[int]], out: torch.Tensor, width: int) -> list[str]:
        """Text of the tokens generated after the left-padded prompts (``width`` wide)."""
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def run_generate(self, input_ids: torch.Tensor, mask: torch.Tensor, kwargs: Mapping[str, Any], prompt_width: int) -> torch.Tensor:
        """``model.generate`` with stop strings as a stopping criterion (new tokens start at ``prompt_width``)."""
        import torch

        hf_kwargs = {k: v for k, v in kwargs.items() if k != "stop_strings"}
        if kwargs.get("stop_strings"):
            hf_kwargs["stopping_criteria"] = [StopOnStrings(self.tokenizer, kwargs["stop_strings"], prompt_width)]
        with torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), pad_token_id=self.pad_id, **hf_kwargs
            )

    def generation_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Translate validated babelplug parameters to ``model.generate`` keywords.

        The backend's :attr:`default_generation` fills what ``params`` leave out
        (its sampling settings only when sampling); ``first_token_script`` adds
        every vocabulary piece outside that script to ``begin_suppress_tokens``.
        """
        defaults = dict(self.default_generation)
        if params.get("do_sample") is False:
            defaults = {k: v for k, v in defaults.items() if k not in SAMPLING_KEYS}
        merged = {**defaults, **params}
        kwargs = {k: v for k, v in merged.items() if k not in ("seed", "stop", "first_token_script")}
        kwargs.setdefault("max_new_tokens", 32)
        kwargs.setdefault("do_sample", False)
        if merged.get("stop"):
            kwargs["stop_strings"] = list(merged["stop"])
        if merged.get("first_token_script"):
            outside = self.pieces_outside_script(merged["first_token_script"])
            kwargs["begin_suppress_tokens"] = sorted(set(kwargs.get("begin_suppress_tokens", ())) | outside)
        return kwargs

    def pieces_outside_script(self, script: str) -> frozenset[int]:
        """Ids of vocabulary pieces with any character outside ``script`` (cached per script).

        A piece that starts a word (``▁``/``Ġ``) counts as holding a space, so it
        is outside too; so are special tokens. This generalises WangChanGLM's
        ``exclude_ids`` (every piece with a non-Thai character) to any script.
        """
        cache = self.__dict__.setdefault("_script_cache", {})
        if script not in cache:
            tok = self.tokenizer
            inside = []
            for i, raw in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))):
                text = "" if raw is None or raw.startswith(("▁", "Ġ")) else tok.convert_tokens_to_string([raw])
                if text and all(in_script(ch, script) for ch in text):
                    inside.append(i)
            if not inside:
                raise OptionError("generation parameters", "$.first_token_script", f"no vocabulary piece of this model is written in script {script!r}")
            cache[script] = frozenset(range(len(tok))) - frozenset(inside)
        return cache[script]

    # -- chat ---------------------------------------------------------------
    def chat_format(self, messages: Sequence[Message]) -> str:
        name = self.options.get("chat_format", self.default_chat_format)
        if name == "template":
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        from .chat import chat_format

        return chat_format(name)(messages)

    def close(self) -> None:
        del self.model
        import gc

        gc.collect()


def _context_groups(pairs: Sequence[tuple[list[int], list[int]]], size: int) -> list[list[int]]:
    """Indices of pairs with the same context, at most ``size`` to a group."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx), []).append(i)
    return [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]


def _row_length(pairs: Sequence[tuple[list[int], list[int]]], group: Sequence[int]) -> int:
    """Tokens in the row a group of same-context pairs is scored in."""
    return len(pairs[group[0]][0]) + sum(max(len(pairs[i][1]) - 1, 0) for i in group)


def _fill(groups: Sequence[list[int]], size: int) -> Iterator[list[int]]:
    """Consecutive groups packed into chunks of at most ``size`` indices (a bigger group alone)."""
    chunk: list[int] = []
    for group in groups:
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        chunk += group
    if chunk:
        yield chunk


def _tree_mask(segments: torch.Tensor, mode: str, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, 1, seq, seq]`` mask: causal, and a branch sees the context (0) and itself.

    ``segments`` is ``[batch, seq]``: 0 for context, k for branch k, -1 for padding.
    """
    import torch

    width = segments.shape[1]
    allowed = (segments[:, :, None] == segments[:, None, :]) | (segments[:, None, :] == 0)
    allowed &= torch.ones(width, width, dtype=torch.bool).tril()
    if mode == "binary":
        return allowed[:, None].to(dtype)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


#: Generation parameters that matter only when sampling.
SAMPLING_KEYS = frozenset({"temperature", "top_k", "top_p", "typical_p"})

#: Unicode script names whose characters are not named after the script.
SCRIPT_PREFIXES = {"han": ("CJK UNIFIED IDEOGRAPH",), "japanese": ("HIRAGANA", "KATAKANA", "CJK UNIFIED IDEOGRAPH")}


def in_script(ch: str, script: str) -> bool:
    """Whether ``ch`` belongs to ``script`` ("thai", "latin", "han", "tamil", ...), by its Unicode name."""
    import unicodedata

    name = unicodedata.name(ch, "")
    prefixes = SCRIPT_PREFIXES.get(script.lower(), (script.upper() + " ",))
    return name.startswith(prefixes)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


class StopOnStrings:
    """A transformers stopping criterion: a row is done once its new text holds a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_width: int):
        self.tokenizer, self.stops, self.start = tokenizer, list(stops), prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)
