"""lm-evaluation-harness's `local-completions` model against the live server, on Gemma 3 270M: a tiny
multiple-choice task from local files, whose loglikelihoods (echo with logprobs, max_tokens 1) must equal
the model's own, computed in process.

lm-eval needs a tokenizer to split context from continuation: the model's own folder (no download),
with <bos> added and the ids sent as they are (tokenized_requests), so that the server scores exactly
the tokens lm-eval counts. Nothing leaves 127.0.0.1: the dataset is a JSONL file in tmp_path.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
TASK = "gemmacli_tiny_choices"
DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "Berlin", "Madrid"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["four", "five", "seven"], "answer": 0},
    {"question": "The opposite of hot is", "choices": ["cold", "blue", "fast"], "answer": 0},
    {"question": "Water freezes at zero degrees", "choices": ["Celsius", "of the night", "banana"], "answer": 0},
]


def write_task(folder) -> None:
    """A multiple-choice task (each choice scored by loglikelihood) over a local JSONL dataset."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: '{data}'}}, cache_dir: '{folder / 'cache'}'}}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        "doc_to_target: answer\n"
        "doc_to_choice: choices\n"
        "metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]\n"
    )


def model_loglikelihood(runner, context: str, continuation: str) -> tuple[float, bool]:
    """The continuation's summed logprob after the context, and whether greedy decoding gives it: one forward pass
    over the tokens lm-eval sends (the whole text's, split where the context's own tokens end)."""
    context_ids = runner.tokenizer(context)["input_ids"]
    ids = runner.tokenizer(context + continuation)["input_ids"]
    with torch.inference_mode():
        logprobs = torch.log_softmax(runner.model(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)  # (T - 1, V)
    rows, targets = logprobs[len(context_ids) - 1 :], torch.tensor(ids[len(context_ids) :])
    total = float(rows.gather(1, targets.unsqueeze(1)).sum())
    return total, bool((rows.argmax(dim=-1) == targets).all())


def test_lm_eval_loglikelihoods_equal_the_models(server, gemma_dir, chat_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # read when lm-eval first imports datasets, below
    import lm_eval
    from lm_eval.tasks import TaskManager

    write_task(tmp_path)
    model_args = {
        "model": MODEL,
        "base_url": f"{server}/v1/completions",
        "tokenizer_backend": "huggingface",
        "tokenizer": str(gemma_dir),
        "add_bos_token": True,
        "tokenized_requests": True,
        "max_retries": 1,
    }
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=model_args,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = results["samples"][TASK]  # one per doc: its (context, continuation) pairs and lm-eval's answers
    pairs = [pair for sample in samples for pair in zip(sample["arguments"], sample["resps"], strict=True)]
    assert len(pairs) == sum(len(doc["choices"]) for doc in DOCS)
    differences = []
    for (context, continuation), [(loglikelihood, greedy)] in pairs:
        expected, expected_greedy = model_loglikelihood(chat_runner, context, continuation)
        differences.append(abs(loglikelihood - expected))
        assert greedy == expected_greedy, (context, continuation)
    assert max(differences) < 1e-4
    assert 0 <= results["results"][TASK]["acc,none"] <= 1
