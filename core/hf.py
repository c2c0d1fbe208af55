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
from .errors import ModelLoadError

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
            "description": "Weights and compute dtype; 'auto' takes the checkpoint's (never float16 on CPU).",
        },
        "device": {"type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?|mps)$"},
        "device_map": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "max_memory": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
        "batch_size": {"type": "integer", "minimum": 1, "description": "Requests per forward pass (default 32)."},
        "trust_remote_code": {"type": "boolean"},
        "chat_format": {"type": "string", "description": "A registered chat format, or 'template'."},
    },
}


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
    options_schema = TRANSFORMERS_OPTIONS

    def __init__(self, path: Path, options: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel):
        self.path, self.options = Path(path), dict(options)
        self.tokenizer, self.model = tokenizer, model
        self.batch_size = int(options.get("batch_size", self.default_batch_size))

    # -- load -------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, **options: Any) -> TransformersBackend:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        import transformers

        tokenizer = cls.load_tokenizer(path, options)
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=options.get("trust_remote_code", False))
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:
            raise ModelLoadError(
                f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                f"(config.json vocab_size) has {vocab}: tokenizer and weights do not belong together"
            )
        model = getattr(transformers, cls.auto_class).from_pretrained(path, **cls.model_kwargs(options))
        if "device" in options and "device_map" not in options:
            model.to(options["device"])
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

        dtype = options.get("dtype", "float32")
        on_cpu = options.get("device", "cpu") == "cpu" and options.get("device_map") in (None, "cpu")
        if dtype == "float16" and on_cpu:
            dtype = "float32"  # fp16 compute on CPU is the slowest path, and lossy
        kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        for key in ("device_map", "max_memory", "trust_remote_code"):
            if key in options:
                kwargs[key] = options[key]
        return kwargs

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # -- tokenize -----------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    def prefix_ids(self) -> list[int]:
        """Tokens that stand for an empty context (the family's start token)."""
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [start] if start is not None else []

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Split ``encode(context + continuation)`` at ``len(encode(context))``.

        Trailing whitespace of the context moves to the continuation, as in
        lm-evaluation-harness, so both tokenize the same way.
        """
        contexts, wholes = [], []
        for context, continuation in requests:
            stripped = context.rstrip()
            contexts.append(stripped)
            wholes.append(stripped + context[len(stripped) :] + continuation)
        ctx_ids = self.tokenize(contexts)
        whole_ids = self.tokenize(wholes)
        pairs = []
        for ctx, whole in zip(ctx_ids, whole_ids):
            head, tail = whole[: len(ctx)], whole[len(ctx) :]
            pairs.append((head or self.prefix_ids(), tail))
        return pairs

    # -- score --------------------------------------------------------------
    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        pairs = self.encode_pairs(requests)
        results: list[Score | None] = [None] * len(pairs)
        order = longest_first([len(c) + len(x) for c, x in pairs])
        for chunk in batched(order, self.batch_size):
            for i, result in zip(chunk, self.score_batch([pairs[i] for i in chunk])):
                results[i] = result
        return results  # type: ignore[return-value]

    def score_batch(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Score]:
        """Score one batch of token pairs: right padding, head only on continuations."""
        import torch

        seqs = [ctx + cont for ctx, cont in pairs]
        width = max(len(s) for s in seqs) - 1
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(seqs), max(width, 1)), pad, dtype=torch.long)
        rows, cols, targets, counts = [], [], [], []
        for i, ((ctx, cont), seq) in enumerate(zip(pairs, seqs)):
            input_ids[i, : len(seq) - 1] = torch.tensor(seq[:-1])
            rows += [i] * len(cont)
            cols += range(len(ctx) - 1, len(seq) - 1)
            targets += cont
            counts.append(len(cont))
        mask = torch.zeros_like(input_ids)
        for i, seq in enumerate(seqs):
            mask[i, : len(seq) - 1] = 1
        with torch.inference_mode():
            hidden = self.hidden_states(input_ids.to(self.device), mask.to(self.device))
            picked = hidden[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)]
            logits = self.model.get_output_embeddings()(picked).float()
            target = torch.tensor(targets, dtype=torch.long, device=logits.device)
            token_lp = logits.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
            greedy = logits.argmax(-1) == target
        out, start = [], 0
        for n in counts:
            lp = float(token_lp[start : start + n].double().sum()) if n else 0.0
            out.append(Score(lp, n, bool(greedy[start : start + n].all()) if n else True))
            start += n
        return out

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the base model for right-padded inputs."""
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

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
        """Left-pad token prompts, generate, and decode only the new tokens."""
        import torch

        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        extra: dict[str, Any] = {}
        if kwargs.get("stop_strings"):
            extra["stopping_criteria"] = [StopOnStrings(self.tokenizer, kwargs["stop_strings"], width)]
        hf_kwargs = {k: v for k, v in kwargs.items() if k != "stop_strings"}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), pad_token_id=pad, **hf_kwargs, **extra
            )
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    def generation_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Translate validated babelplug parameters to ``model.generate`` keywords."""
        kwargs = {k: v for k, v in params.items() if k not in ("seed", "stop")}
        kwargs.setdefault("max_new_tokens", 32)
        kwargs.setdefault("do_sample", False)
        if params.get("stop"):
            kwargs["stop_strings"] = list(params["stop"])
        return kwargs

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
