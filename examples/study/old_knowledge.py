#!/usr/bin/env python3
"""Old knowledge for the study: real multiple-choice questions from a package on PyPI.

    old_knowledge.py OUT_DIR [--per-subject N] [--seed S]

Downloads lm-eval 0.4.13 (MIT licence; `pip download`, no install) and reads
`lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`: the five dev-split questions of each of
MMLU's 57 subjects (MMLU: Hendrycks et al., MIT licence) that lm-eval ships as few-shot examples.
Writes OUT_DIR/mmlu/test.json in TRACE multiple-choice form (prompt, answer, choices), scored by
`clreg eval … --task mmlu:mc:FILE` (acc_norm), and OUT_DIR/mmlu/SOURCE.txt saying where it came
from. Questions whose text the package stores with broken escapes (a form feed or carriage
return where LaTeX had `\\f…`/`\\r…`) are skipped and counted.
"""
import argparse
import hashlib
import json
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "lm-eval==0.4.13"
MEMBER = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
CHOICE = re.compile(r"\(([A-D])\)\s*")
ANSWER = re.compile(r"The answer is \(([A-D])\)")
# What a LaTeX command looks like after the package's JSON turned `\f…`, `\r…`, `\n…`, `\t…`
# into control characters: a control character, or a line break inside a `$…$` span.
BROKEN = re.compile(r"[\f\r\t\x07\x08\x0b]|\$[^$]*\n[^$]*\$")


def questions(subject, text):
    """(question, [4 choices], index of the right one) for each Q/A block of a subject."""
    out = []
    for block in text.split("\n\nQ: ")[1:] if "\n\nQ: " in text else []:
        q, _, rest = block.partition("\nA: ")
        lines = q.split("\n")
        choice_line = lines[-1]
        parts = CHOICE.split(choice_line)
        # parts: ['', 'A', text, 'B', text, …]
        if len(parts) != 9 or parts[0].strip():
            continue
        choices = [parts[i].strip() for i in (2, 4, 6, 8)]
        m = ANSWER.search(rest)
        if not m or any(not c for c in choices):
            continue
        question = "\n".join(lines[:-1]).strip()
        out.append((question, choices, "ABCD".index(m.group(1))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-subject", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", tmp], check=True)
        wheel = next(pathlib.Path(tmp).glob("lm_eval-*.whl"))
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        with zipfile.ZipFile(wheel) as z:
            prompts = json.loads(z.read(MEMBER))
    examples, skipped, seen = [], 0, set()
    for subject in sorted(prompts):
        found = questions(subject, prompts[subject])
        for question, choices, right in found[: a.per_subject]:
            if BROKEN.search(question + " ".join(choices)):
                skipped += 1
                continue
            if question in seen:  # a few subjects share a question
                continue
            seen.add(question)
            name = subject.replace("_", " ")
            examples.append({
                "prompt": f"The following is a multiple choice question about {name}.\n\n{question}\nAnswer:",
                "answer": choices[right],
                "choices": choices,
            })
    random.Random(a.seed).shuffle(examples)
    out = pathlib.Path(a.out) / "mmlu"
    out.mkdir(parents=True, exist_ok=True)
    (out / "test.json").write_text(json.dumps(examples, indent=1, ensure_ascii=False))
    (out / "SOURCE.txt").write_text(
        f"{len(examples)} MMLU dev questions ({skipped} skipped for broken escapes) from {PACKAGE} "
        f"(wheel sha256 {wheel_sha}), member {MEMBER}.\n"
        "lm-eval: MIT licence. MMLU (Hendrycks et al. 2021): MIT licence.\n")
    print(f"{out / 'test.json'}: {len(examples)} questions ({skipped} skipped)")


if __name__ == "__main__":
    main()
