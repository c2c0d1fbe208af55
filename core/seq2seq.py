"""A reusable base for encoder-decoder (seq2seq) transformers backends, such as mT5/mT0.

Scoring: the encoder reads the context, the decoder is scored on the
continuation. Two conventions, chosen by the load option ``score_eos``:

``score_eos`` false (default): lm-evaluation-harness 0.4's
    The context's trailing whitespace moves to the continuation; the encoder
    reads ``encode(context)`` (with its final ``</s>``) and the decoder is
    scored on ``encode(continuation)`` without special tokens, so no final
    ``</s>``. An empty context is the encoder input ``prefix_ids()`` alone.
    ``tests/test_seq2seq_lmeval.py`` compares with lm-evaluation-harness's
    seq2seq loglikelihoods on the tiny mT0 (1e-4).
``score_eos`` true: the model cards'
    The context is kept as it is, and the decoder is scored on
    ``encode(continuation)`` with its final ``</s>``: the sum equals
    ``-loss * target_length`` of ``model(input_ids, labels=target_ids)``, as the
    same test checks.

Over-long requests: the encoder keeps the context's last ``max_length`` tokens
(as lm-evaluation-harness does), or the request is refused (``truncation``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .backend import Score
from .hf import TRANSFORMERS_OPTIONS, TransformersBackend, batched, longest_first, pad_rows
from .limits import over_budget, within_budget
from .scoring import Pairs, TokenPair

#: Load options of seq2seq backends: the transformers ones and ``score_eos``.
SEQ2SEQ_OPTIONS: dict[str, Any] = {
    **TRANSFORMERS_OPTIONS,
    "properties": {
        **TRANSFORMERS_OPTIONS["properties"],
        "score_eos": {
            "type": "boolean",
            "description": "Score the continuation's final </s> and keep the context's trailing space (the cards' -loss * length); "
            "default false: lm-evaluation-harness's convention.",
        },
    },
}


class TransformersSeq2SeqBackend(TransformersBackend):
    """Shared score/generate for ``AutoModelForSeq2SeqLM`` models."""

    auto_class = "AutoModelForSeq2SeqLM"
    causal = False
    options_schema = SEQ2SEQ_OPTIONS

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[TokenPair]:
        """Encoder and decoder tokens of each request, by the ``score_eos`` convention (see the module docstring)."""
        if self.options.get("score_eos"):
            contexts, targets = self.tokenize([c for c, _ in requests]), self.tokenize([x for _, x in requests])
            return [TokenPair(c, t) for c, t in zip(contexts, targets)]
        stripped = [c.rstrip() for c, _ in requests]
        moved = [c[len(s) :] + x for s, (c, x) in zip(stripped, requests)]
        contexts = self.tokenize(stripped)
        targets = self.tokenizer(moved, add_special_tokens=False, verbose=False)["input_ids"]
        return [TokenPair(c if s else self.prefix_ids(), t) for s, c, t in zip(stripped, contexts, targets)]

    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Score in batches of ``batch_size`` requests, longest first, within the limits."""
        from dataclasses import replace

        self.limits.check_chars(requests, "score requests", ("context", "continuation"))
        pairs, cut = self.fit_pairs(self.encode_pairs(requests))
        refuse = over_budget("score requests", "context", self.limits.memory_budget)

        def cost(chunk: list[int]) -> int:
            return self.shape.seq2seq_score(len(chunk), max(len(pairs[i][0]) for i in chunk), max(len(pairs[i][1]) for i in chunk))

        results: list[Score | None] = [None] * len(requests)
        for chunk in batched(longest_first([len(c) + len(t) for c, t in pairs]), self.batch_size):
            for part in within_budget(chunk, cost, self.limits.memory_budget, refuse):
                for i, s in zip(part, self.score_batch([pairs[i] for i in part])):
                    results[i] = replace(s, truncated=cut[i])
        return results  # type: ignore[return-value]

    def score_batch(self, pairs: Pairs) -> list[Score]:
        """Encoder inputs and decoder labels right-padded; log-probs summed over label tokens."""
        import torch

        input_ids, mask = pad_rows([ctx for ctx, _ in pairs], self.pad_id)
        labels, _ = pad_rows([tgt for _, tgt in pairs], -100, min_width=1)  # -100: not scored
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), labels=labels.to(self.device)
            ).logits.float()
        labels = labels.to(logits.device)
        valid = labels >= 0
        safe = labels.clamp(min=0)
        token_lp = logits.log_softmax(-1).gather(2, safe[..., None]).squeeze(-1)
        greedy = (logits.argmax(-1) == safe) | ~valid
        out = []
        for i, (_, tgt) in enumerate(pairs):
            lp = float(token_lp[i][valid[i]].double().sum()) if tgt else 0.0
            out.append(Score(lp, len(tgt), bool(greedy[i].all())))
        return out

    def generate_batch(self, prompts: Sequence[list[int]], kwargs: Mapping[str, Any]) -> list[str]:
        """Right-pad encoder inputs; the decoder output holds only new tokens."""
        input_ids, mask = pad_rows(prompts, self.pad_id)
        out = self.run_generate(input_ids, mask, kwargs, prompt_width=1)  # after the decoder start token
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)
