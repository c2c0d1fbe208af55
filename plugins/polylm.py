"""PolyLM (DAMO-NLP-MT/polylm-* on HuggingFace, damo/nlp_polylm_* on ModelScope).

Two engines, chosen by the load option ``engine``:

``transformers`` (default)
    ``AutoModelForCausalLM`` and the slow sentencepiece tokenizer, loaded as
    modelscope's PolyLM model loads them (``use_fast=False, legacy=False``).
``modelscope``
    modelscope's own ``pipeline(Tasks.text_generation)``, which the folder's
    ``configuration.json`` must route to the PolyLM pipeline. That pipeline
    refuses to run without ``trust_remote_code=True``, so this engine needs it.

Both engines return the text after the prompt (the pipeline echoes the prompt;
it is stripped), decoded as the difference between the decoded whole sequence
and the decoded prompt, so the two engines give the same texts. Generation ends
at the tokenizer's ``</s>`` (id 2 in the real checkpoints, whose config names
another id), as every official example passes ``eos_token_id=2``. Scoring runs
on the underlying torch model with either engine.

Real PolyLM checkpoints ship remote code that imports ``SequenceSummary`` from
``transformers.modeling_utils``, which exists only up to transformers 4.52.4.
``trust_remote_code`` stays off unless the user opts in for the model; when
they do, :func:`provide_sequence_summary` supplies that name first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from babelplug.checks import check_folder, read_config
from babelplug.errors import MissingDependencyError, ModelLoadError, OptionError
from babelplug.hf import TRANSFORMERS_OPTIONS, TransformersBackend, cut_at_stop, installed
from babelplug.hookspecs import hookimpl

#: What ``configuration.json`` must say for modelscope to pick the PolyLM pipeline.
PIPELINE_TYPE = "polylm-text-generation"


def provide_sequence_summary() -> None:
    """Make ``transformers.modeling_utils.SequenceSummary`` importable again.

    transformers moved it into the model files after 4.52.4; GPT-2's copy is the
    same module, so PolyLM's remote code gets that.
    """
    import transformers.modeling_utils as modeling_utils

    if not hasattr(modeling_utils, "SequenceSummary"):
        from transformers.models.gpt2.modeling_gpt2 import GPT2SequenceSummary

        modeling_utils.SequenceSummary = GPT2SequenceSummary


def check_pipeline_configuration(path: Path) -> None:
    """The folder's ``configuration.json`` must select modelscope's PolyLM pipeline."""
    config_file = path / "configuration.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{config_file}: missing; engine 'modelscope' needs it to select the PolyLM pipeline") from None
    except ValueError as exc:
        raise ModelLoadError(f"{config_file}: invalid JSON ({exc})") from None
    got = (config.get("pipeline") or {}).get("type") if isinstance(config, dict) else None
    if got != PIPELINE_TYPE or config.get("task") != "text-generation":
        raise ModelLoadError(
            f"{config_file}: selects pipeline {got!r} for task {config.get('task')!r}; engine 'modelscope' needs "
            f"task 'text-generation' with pipeline type {PIPELINE_TYPE!r}"
        )


class PolyLMBackend(TransformersBackend):
    """PolyLM through transformers or modelscope's pipeline (catalog: ``specs/models/polylm.json``)."""

    name = "polylm"
    model_types = ()  # GPT-2 style folders; pick this backend by name or catalog entry
    default_chat_format = "polylm"
    options_schema = {
        **TRANSFORMERS_OPTIONS,
        "properties": {
            **TRANSFORMERS_OPTIONS["properties"],
            "engine": {"enum": ["transformers", "modelscope"], "description": "Run through transformers (default) or modelscope's pipeline."},
        },
    }

    pipeline: Any = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        super().validate_options(options)
        if options.get("engine") == "modelscope":
            if not installed("modelscope"):
                raise MissingDependencyError("backend 'polylm': engine 'modelscope' needs modelscope; install it with: pip install 'babelplug[modelscope]'")
            if not options.get("trust_remote_code"):
                raise OptionError(
                    "load options of backend 'polylm'", "$.engine",
                    "modelscope's PolyLM pipeline runs only with trust_remote_code=True (it may execute code from the model folder); pass it to opt in",
                )  # fmt: skip

    @classmethod
    def load(cls, path: Path, **options: Any) -> PolyLMBackend:
        path = Path(path)
        cls.validate_options(options)
        config = read_config(path) or {}  # broken JSON: a ModelLoadError naming line and column
        if config.get("auto_map"):
            if not options.get("trust_remote_code"):
                raise ModelLoadError(
                    f"{path}: this PolyLM folder runs its own modeling code ({', '.join(config['auto_map'].values())}); "
                    "pass trust_remote_code=True to opt in for this model"
                )
            provide_sequence_summary()
        if options.get("engine") != "modelscope":
            return super().load(path, **options)  # type: ignore[return-value]
        check_folder(path, options, cls.name, cls.default_chat_format)  # weights, pickle policy, devices
        check_pipeline_configuration(path)
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks

        pipe = pipeline(Tasks.text_generation, model=str(path.resolve()), trust_remote_code=True)
        backend = cls(path, options, pipe.model.tokenizer, pipe.model.model)
        backend.pipeline = pipe
        return backend

    @classmethod
    def load_tokenizer(cls, path: Path, options: Mapping[str, Any]) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, legacy=False, use_fast=False, trust_remote_code=options.get("trust_remote_code", False))

    def generation_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = super().generation_kwargs(params)
        kwargs.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        return kwargs

    def completion(self, prompt_ids: Sequence[int], full_text: str) -> str:
        """The text after the prompt: the decoded whole minus the decoded prompt."""
        prompt_text = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
        return full_text[len(prompt_text) :] if full_text.startswith(prompt_text) else full_text

    def decode_completions(self, prompts: Sequence[list[int]], out: Any, width: int) -> list[str]:
        return [
            self.completion(p, self.tokenizer.decode(row[width - len(p) :].tolist(), skip_special_tokens=True))
            for p, row in zip(prompts, out)
        ]

    def generate(self, prompts: Sequence[str], params: Mapping[str, Any]) -> list[str]:
        if self.pipeline is None:
            return super().generate(prompts, params)
        import torch

        from babelplug.hf import StopOnStrings

        kwargs = self.generation_kwargs(params)
        stops = kwargs.pop("stop_strings", None)
        if params.get("seed") is not None:
            torch.manual_seed(params["seed"])
        self.limits.check_chars([(p,) for p in prompts], "prompts", ("prompt",))
        encoded = self.tokenize(prompts)
        fitted, budgets = self.fit_prompts(encoded, kwargs["max_new_tokens"])
        results = []
        for prompt, full_ids, ids, new in zip(prompts, encoded, fitted, budgets):
            if ids != full_ids:  # cut to the model's maximum length: the pipeline gets the kept text
                prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
                ids = self.tokenize([prompt])[0]
            extra = {"stopping_criteria": [StopOnStrings(self.tokenizer, stops, len(ids))]} if stops else {}
            full = self.pipeline(prompt, **{**kwargs, "max_new_tokens": new}, **extra)["text"]
            results.append(cut_at_stop(self.completion(ids, full), params.get("stop", ())))
        return results


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(PolyLMBackend)
