"""A reusable base for backends built on HuggingFace transformers.

Plugins for transformers model families subclass :class:`TransformersBackend`
and adjust a few class attributes or methods; the XGLM plugin is an example.
Importing this module is cheap: torch and transformers load in :meth:`load`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .backend import Backend, Message, Score
from .errors import MissingDependencyError, ModelLoadError, OptionError, RequestError
from .generation import SAMPLING_KEYS, SCRIPT_PREFIXES, StopOnStrings, cut_at_stop, in_script, pieces_outside_script
from .limits import LIMIT_OPTIONS, Limits, Shape, TruncationWarning, over_budget, warn_truncated, within_budget
from .scoring import Pairs, TokenPair, context_groups, encode_pairs, fill, pack, probe_packing, row_length, tree_mask

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
        "allow_pickle": {"type": "boolean", "description": "Load pickle weights (pytorch_model*.bin) when the folder has no safetensors; pickles can run code (off unless you opt in)."},
        "chat_format": {"type": "string", "description": "A registered chat format, or 'template'."},
        **LIMIT_OPTIONS,
    },
}

__all__ = [
    "TRANSFORMERS_OPTIONS", "TransformersBackend", "installed", "quantization", "pad_rows", "batched", "longest_first",
    # re-exported from babelplug.generation, babelplug.scoring and babelplug.limits
    "SAMPLING_KEYS", "SCRIPT_PREFIXES", "StopOnStrings", "cut_at_stop", "in_script", "TokenPair", "tree_mask",
    "Limits", "TruncationWarning",
]  # fmt: skip


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
    causal: ClassVar[bool] = True
    """Decoder-only (True) or encoder-decoder: how the maximum length applies."""
    default_generation: ClassVar[dict[str, Any]] = {}
    """Generation parameters used when the caller leaves them out (a model card's defaults)."""
    options_schema = TRANSFORMERS_OPTIONS

    def __init__(self, path: Path, options: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel):
        self.path, self.options = Path(path), dict(options)
        self.tokenizer, self.model = tokenizer, model
        self.batch_size = int(options.get("batch_size", self.default_batch_size))
        config = getattr(model, "config", None)
        self.limits = Limits.of(config, tokenizer, options)
        self.shape = Shape.of(config, getattr(getattr(model, "dtype", None), "itemsize", 4))

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
        from .checks import check_folder, load_failure

        path = Path(path)
        cls.validate_options(options)
        weights = check_folder(path, options, cls.name, cls.default_chat_format)  # config, weights, devices: no weights read
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
            model = getattr(transformers, cls.auto_class).from_pretrained(path, **cls.model_kwargs(options), **weights.from_pretrained_kwargs())
        except Exception as exc:
            if "device disk is invalid" in str(exc):  # transformers 4.57 cannot put *every* weight on disk
                raise ModelLoadError(
                    f"{path}: max_memory leaves no room in memory, so device_map='auto' would offload the whole model "
                    "to disk, which transformers cannot load; allow at least the embeddings in memory"
                ) from None
            if load_failure(weights, exc):  # a corrupt weight file: name it
                raise load_failure(weights, exc) from None
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
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]]

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode([list(i) for i in ids], skip_special_tokens=True)

    def prefix_ids(self) -> list[int]:
        """Tokens that stand for an empty context (the family's start token)."""
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [start] if start is not None else []

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[TokenPair]:
        """Token pairs as lm-evaluation-harness makes them, except where its continuation
        tokens would not spell the continuation (then ``resplit``); see :func:`babelplug.scoring.encode_pairs`."""
        return encode_pairs(self, requests)

    def fit_pairs(self, pairs: Pairs) -> tuple[list[tuple[list[int], list[int]]], list[bool]]:
        """Pairs cut to the model's maximum length (see :meth:`Limits.fit_pair`), and which were cut; warns once."""
        fitted, cut = [], []
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                raise RequestError("score requests", i, "continuation", "tokenizes to no tokens: there is nothing to score")
            ctx, was_cut = self.limits.fit_pair(i, list(ctx), list(cont), "score requests", causal=self.causal)
            fitted.append((ctx, list(cont)))
            cut.append(was_cut)
        warn_truncated(self.limits, sum(cut), len(cut), "score requests")
        return fitted, cut

    # -- score --------------------------------------------------------------
    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Score in batches of ``batch_size`` requests, longest first, within the limits.

        Requests with the same context (the choices of one item) go into one batch
        when the model can share it (see :meth:`score_batch`). A batch whose
        estimated memory exceeds ``memory_budget`` is split.
        """
        self.limits.check_chars(requests, "score requests", ("context", "continuation"))
        encoded = self.encode_pairs(requests)
        pairs, cut = self.fit_pairs(encoded)
        if len({tuple(ctx) for ctx, _ in pairs}) < len(pairs) and self._packing():
            groups = context_groups(pairs, self.batch_size)
        else:
            groups = [[i] for i in range(len(pairs))]
        groups = [groups[g] for g in longest_first([row_length(pairs, g) for g in groups])]
        refuse = over_budget("score requests", "context", self.limits.memory_budget)
        results: list[Score | None] = [None] * len(pairs)
        for chunk in fill(groups, self.batch_size):
            for part in within_budget(chunk, lambda c: self.batch_memory([pairs[i] for i in c]), self.limits.memory_budget, refuse):
                for i, result in zip(part, self.score_batch([pairs[i] for i in part])):
                    results[i] = replace(result, truncated=cut[i], resplit=bool(getattr(encoded[i], "resplit", False)))
        return results  # type: ignore[return-value]

    def batch_memory(self, pairs: Pairs) -> int:
        """Estimated activation bytes of :meth:`score_batch` on ``pairs``."""
        mode = self._packing() if len({tuple(ctx) for ctx, _ in pairs}) < len(pairs) else ""
        packed = pack(pairs, mode)
        return self.shape.causal_score(len(packed.ids), packed.width, len(packed.picks))

    def score_batch(self, pairs: Pairs) -> list[Score]:
        """Score one batch of token pairs: right padding, head only on continuations.

        Where the model allows it, pairs with the same context share one row: the
        context once, then each continuation as a branch that sees the context and
        itself only (a tree attention mask; positions restart after the context).
        Exact: every token sees what it would see alone.
        """
        import torch

        mode = self._packing() if len({tuple(ctx) for ctx, _ in pairs}) < len(pairs) else ""
        packed = pack(pairs, mode)
        width = packed.width
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in packed.ids])
        segments = torch.tensor([seg + [-1] * (width - len(seg)) for seg in packed.segments])
        position_ids = None
        if len(packed.ids) < len(pairs):
            mask = tree_mask(segments, mode, self.model.dtype)
            position_ids = torch.tensor([pos + [0] * (width - len(pos)) for pos in packed.positions]).to(self.device)
        else:
            mask = (segments >= 0).long()
        targets = torch.tensor([t for (_, cont) in pairs for t in cont], dtype=torch.long)
        with torch.inference_mode():
            args = (input_ids.to(self.device), mask.to(self.device))
            hidden = self.hidden_states(*args) if position_ids is None else self.hidden_states(*args, position_ids)
            if packed.picks:
                where = torch.tensor(packed.picks, dtype=torch.long, device=hidden.device)
                logits = self.model.get_output_embeddings()(hidden[where[:, 0], where[:, 1]]).float()
            else:
                logits = torch.zeros((0, 1), device=hidden.device)
            index = torch.tensor([k for s in packed.sel for k in s], dtype=torch.long, device=logits.device)
            target = targets.to(logits.device)
            token_lp = logits.log_softmax(-1)[index, target].double().tolist()
            greedy = (logits.argmax(-1)[index] == target).tolist()
        out, start = [], 0
        for s in packed.sel:
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
        """How the model takes a tree mask ('binary', 'additive' or ''), probed once per model
        (see :func:`babelplug.scoring.probe_packing`)."""
        mode = getattr(self, "_packing_mode", None)
        if mode is None:
            mode = self._packing_mode = probe_packing(self)
        return mode

    # -- generate -----------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: Mapping[str, Any]) -> list[str]:
        """Generate in batches of ``batch_size`` prompts, longest first, within the limits.

        Prompts are cut and ``max_new_tokens`` capped to the model's maximum
        length (see :meth:`fit_prompts`); prompts with the same cap share batches.
        """
        import torch

        kwargs = self.generation_kwargs(params)
        if params.get("seed") is not None:
            torch.manual_seed(params["seed"])
        self.limits.check_chars([(p,) for p in prompts], "prompts", ("prompt",))
        encoded, budgets = self.fit_prompts(self.tokenize(prompts), kwargs["max_new_tokens"])
        results: list[str] = [""] * len(prompts)
        order = longest_first([len(e) for e in encoded])
        refuse = over_budget("prompts", "prompt", self.limits.memory_budget)
        for new in sorted(set(budgets), reverse=True):
            for chunk in batched([i for i in order if budgets[i] == new], self.batch_size):
                def cost(c: list[int]) -> int:
                    return self.shape.generation(len(c), max(len(encoded[i]) for i in c) + new, int(kwargs.get("num_beams", 1)))

                for part in within_budget(chunk, cost, self.limits.memory_budget, refuse):
                    texts = self.generate_batch([encoded[i] for i in part], {**kwargs, "max_new_tokens": new})
                    for i, text in zip(part, texts):
                        results[i] = cut_at_stop(text, params.get("stop", ()))
        return results

    def fit_prompts(self, prompts: Sequence[list[int]], max_new_tokens: int) -> tuple[list[list[int]], list[int]]:
        """Prompts cut to the model's maximum length and the new tokens each may get
        (see :meth:`Limits.fit_prompt`); one :class:`TruncationWarning` says what changed."""
        fitted, budgets, cut = [], [], 0
        for i, ids in enumerate(prompts):
            ids, new, was_cut = self.limits.fit_prompt(i, list(ids), max_new_tokens, causal=self.causal)
            fitted.append(ids)
            budgets.append(new)
            cut += was_cut
        capped = sum(1 for b in budgets if b < max_new_tokens)
        warn_truncated(self.limits, cut, len(prompts), "prompts", capped=capped)
        return fitted, budgets

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
        """Ids of vocabulary pieces outside ``script`` (cached per script; see
        :func:`babelplug.generation.pieces_outside_script`)."""
        cache = self.__dict__.setdefault("_script_cache", {})
        if script not in cache:
            cache[script] = pieces_outside_script(self.tokenizer, script)
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
