"""A reusable base for encoder-decoder (seq2seq) transformers backends, such as mT5/mT0.

Scoring: the encoder reads the context, the decoder is scored on the
continuation as the tokenizer encodes it, final ``</s>`` included (the sum
equals ``-loss * target_length``, as lm-evaluation-harness scores seq2seq
models). An empty context is the encoder input ``</s>`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .backend import Score
from .hf import TransformersBackend, batched, longest_first, pad_rows


class TransformersSeq2SeqBackend(TransformersBackend):
    """Shared score/generate for ``AutoModelForSeq2SeqLM`` models."""

    auto_class = "AutoModelForSeq2SeqLM"

    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        contexts = self.tokenize([c for c, _ in requests])
        targets = self.tokenize([x for _, x in requests])
        results: list[Score | None] = [None] * len(requests)
        for chunk in batched(longest_first([len(contexts[i]) + len(targets[i]) for i in range(len(requests))]), self.batch_size):
            for i, s in zip(chunk, self.score_batch([(contexts[i], targets[i]) for i in chunk])):
                results[i] = s
        return results  # type: ignore[return-value]

    def score_batch(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Score]:
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
