"""The PyTorch + PEFT side of bench/train.sh: LoRA (or, with `fft`, full fine-tuning) steps on the
same data, tokenised and truncated exactly as clreg does (prompt ids + answer ids + eos; the answer part keeps up to
max(max_len - len(prompt), max_len // 2) tokens, the prompt its last tokens; loss on the answer)."""
import json
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

model_dir, data_file, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
method = sys.argv[5] if len(sys.argv) > 5 else "lora"
assert method in ("lora", "fft"), method
MAX_LEN, BATCH = 128, 4
torch.set_num_threads(threads)
torch.manual_seed(0)
tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
config = json.load(open(f"{model_dir}/config.json"))
eos = config["eos_token_id"]
eos = eos[0] if isinstance(eos, list) else eos


def encode(ex):
    p = tok(ex["prompt"])["input_ids"]
    a = tok(ex["answer"], add_special_tokens=False)["input_ids"] + [eos]
    if len(p) + len(a) > MAX_LEN:
        keep = max(MAX_LEN - len(p), MAX_LEN // 2)
        if len(a) > keep:
            a = a[:keep]
        p = p[len(p) - (MAX_LEN - len(a)):]
    ids = p + a
    labels = [-100] * len(p) + a
    return ids, labels


data = [encode(ex) for ex in json.load(open(data_file))]
assert all(len(ids) == MAX_LEN for ids, _ in data)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
if method == "lora":
    model = get_peft_model(model, lora)
model.train()
lr = 1e-4 if method == "lora" else 5e-5
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
times = []
for step in range(steps):
    batch = data[step * BATCH:(step + 1) * BATCH]
    ids = torch.tensor([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    t = time.perf_counter()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t)
    print(f"step {step + 1} loss {loss.item():.4f} {times[-1]:.2f} s", flush=True)
print("median_step", statistics.median(times[1:]))
