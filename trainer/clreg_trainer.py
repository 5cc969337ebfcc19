#!/usr/bin/env python3
"""clreg's PyTorch + PEFT trainer: a registry `train` job run on a cluster (Slurm, Kubernetes, or
any command a worker's `[executor]` names) instead of inside the worker.

    python clreg_trainer.py --order ORDER.json --progress PROGRESS.jsonl
    accelerate launch [--multi_gpu | --use_fsdp ...] clreg_trainer.py --order ... --progress ...

The contract (docs/executors.md) is the one `clreg-server run-job` speaks over its pipes:
- ORDER is `{"spec": {"kind": "train", "base", "adapters", "data", "past", "output", "config"},
  "digests": {path: sha256}}`, every path on the filesystem the worker shares with the cluster;
- PROGRESS receives one JSON line per event (`{"event": {"event": "step", ...}}`), then
  `{"done": {"kind": "train", "output": RECORD}}` or `{"failed": {"code", "message"}}`;
- `spec.output` receives a PEFT adapter (lora, olora) or a Hugging Face checkpoint (fft), with
  `clreg_train.json`, the record the worker reads the lineage from.

Semantics are the engine's (engine/src/train), so a job gives the same model wherever it runs:
tokenisation and truncation, the plain/replay/joint mixture and its seeded order, LoRA A
initialisation (splitmix64, Kaiming-uniform) with B = 0, earlier adapters merged into the
weights, the loss (answer tokens' cross-entropy over the whole step's answer-token count), the
O-LoRA term, AdamW with PyTorch semantics, the learning-rate schedules and clipping. Results
agree with the engine's to float rounding, not bit for bit (other kernels, other summation order);
LoRA dropout masks come from torch's generator, not the engine's.

Under `accelerate launch` with N processes each optimizer step's micro-batches are shared among
the processes (DDP or FSDP, as accelerate is configured) and process 0 writes the outputs.
"""
import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

VERSION = "0.1.0"
RECORD = "clreg_train.json"
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
LINEAR_MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


class Refusal(Exception):
    """A failure with the engine's stable code (engine/src/code.rs)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# ---- seeded randomness, as engine/src/tiny.rs and engine/src/data/{split,schedule}.rs ----

class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + GOLDEN) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def below(rng, n):
    return (rng.next() * n) >> 64


def shuffle(items, rng):
    for i in range(len(items) - 1, 0, -1):
        j = below(rng, i + 1)
        items[i], items[j] = items[j], items[i]


def derive(seed, tag, i):
    base = SplitMix64(seed).next()
    return SplitMix64(base ^ ((tag * 0xD6E8FEB86659FD93) & M64) ^ ((i * GOLDEN) & M64)).next()


def without_replacement(n, k, rng):
    idx = list(range(n))
    for i in range(k):
        j = i + below(rng, n - i)
        idx[i], idx[j] = idx[j], idx[i]
    return idx[:k]


class Mixture:
    """Which (task, example) each position of an epoch trains on."""

    def __init__(self, schedule, sizes, seed):
        kind = schedule["kind"]
        if kind != "plain" and len(sizes) < 2:
            raise Refusal("no_past_data", f"{kind} needs at least one earlier task's data")
        used = sizes if kind != "plain" else sizes[:1]
        if any(n == 0 for n in used):
            raise Refusal("empty_task", "a task has no examples; every task needs at least one")
        self.seed, self.counts, self.pool = seed, [0] * len(sizes), []
        if kind == "plain":
            self.pool = [(0, i) for i in range(sizes[0])]
            self.counts[0] = sizes[0]
        elif kind == "replay":
            fraction = schedule["fraction"]
            if not 0.0 < fraction <= 1.0:
                raise Refusal("bad_replay_fraction", f"the replay fraction is {fraction}; give one in (0, 1]")
            self.pool = [(0, i) for i in range(sizes[0])]
            self.counts[0] = sizes[0]
            k = int(math.floor(fraction * sizes[0] + 0.5))  # half away from zero, as f64::round
            for task, n in enumerate(sizes[1:], start=1):
                rng = SplitMix64(derive(seed, 1, task))
                picks = without_replacement(n, k, rng) if n >= k else [below(rng, n) for _ in range(k)]
                self.pool += [(task, i) for i in picks]
                self.counts[task] = k
        elif kind == "joint":
            big = max(sizes)
            for task, n in enumerate(sizes):
                for _ in range(big // n):
                    self.pool += [(task, i) for i in range(n)]
                rng = SplitMix64(derive(seed, 1, task))
                self.pool += [(task, i) for i in without_replacement(n, big % n, rng)]
                self.counts[task] = big
        else:
            raise Refusal("invalid_option", f"unknown data schedule `{kind}`")

    def epoch(self, e):
        order = list(self.pool)
        shuffle(order, SplitMix64(derive(self.seed, 2, e)))
        return order


def lora_a_init(rows, cols, seed):
    """The engine's A: (2u - 1) / sqrt(in) with u the splitmix64 outputs 1.. of `seed`, >> 11."""
    import numpy as np
    k = np.arange(1, rows * cols + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    bound = 1.0 / math.sqrt(max(cols, 1))
    return ((2.0 * u - 1.0) * bound).astype(np.float32).reshape(rows, cols)


# ---- data, as engine/src/data/{example,encode,batch}.rs ----

def read_trace(path):
    text = Path(path).read_text(encoding="utf-8")
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise Refusal("invalid_dataset", f"{path}: not TRACE data (a JSON array or JSON Lines): {e}")
    for i, ex in enumerate(items):
        if not (isinstance(ex, dict) and isinstance(ex.get("prompt"), str) and isinstance(ex.get("answer"), str)):
            raise Refusal("invalid_dataset", f"{path}: example {i} is not {{\"prompt\": str, \"answer\": str}}")
    return items


def encode(tok, ex, eos, max_len):
    """(ids, answer_start, cut_prompt, cut_answer)."""
    prompt = tok.encode(ex["prompt"], add_special_tokens=True)
    p = prompt.ids
    front = 0
    for m in prompt.special_tokens_mask:
        if m != 1:
            break
        front += 1
    front = min(front, len(p))
    answer = tok.encode(ex["answer"], add_special_tokens=False).ids
    if not answer:
        raise Refusal("invalid_dataset", f"the answer {ex['answer']!r} has no tokens")
    part = list(answer) + [eos]
    cut_prompt = cut_answer = False
    if len(p) + len(part) > max_len:
        cap = max(max_len - len(p), 0, max_len // 2)
        if len(part) > cap:
            part, cut_answer = part[:cap], True
    budget = max_len - len(part)
    if len(p) > budget:
        cut_prompt = True
        keep_front = min(front, budget)
        tail = budget - keep_front
        ids = list(p[:keep_front]) + (list(p[len(p) - tail:]) if tail else [])
    else:
        ids = list(p)
    return ids + part, len(ids), cut_prompt, cut_answer


def pad_batch(items, pad):
    length = max((len(ids) - 1 for ids, _ in items), default=0)
    inp, tgt, mask = [], [], []
    for ids, start in items:
        n = len(ids) - 1
        inp.append(ids[:n] + [pad] * (length - n))
        tgt.append(ids[1:] + [pad] * (length - n))
        mask.append([1.0 if t + 1 >= start else 0.0 for t in range(n)] + [0.0] * (length - n))
    return inp, tgt, mask


def pack_batches(items, rows, length, pad):
    stream, answer = [], []
    for ids, start in items:
        stream += ids
        answer += [i >= start for i in range(len(ids))]
    inputs = max(len(stream) - 1, 0)
    total = -(-inputs // length)
    out, row = [], 0
    while row < total:
        n_rows = min(rows, total - row)
        inp, tgt, mask = [], [], []
        for r in range(n_rows):
            s = (row + r) * length
            n = min(length, inputs - s)
            inp.append(stream[s:s + n] + [pad] * (length - n))
            tgt.append(stream[s + 1:s + 1 + n] + [pad] * (length - n))
            mask.append([1.0 if answer[s + 1 + t] else 0.0 for t in range(n)] + [0.0] * (length - n))
        out.append((inp, tgt, mask))
        row += n_rows
    return out


def learning_rate(cfg, step, total):
    warmup = cfg["warmup_steps"]
    if step < warmup:
        return cfg["lr"] * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    schedule = cfg["lr_schedule"]
    if schedule == "linear":
        return cfg["lr"] * (1.0 - progress)
    if schedule == "cosine":
        return cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg["lr"]


# ---- files ----

def sha256_file(path, known):
    key = str(path)
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_files(base):
    index = base / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [base / n for n in names]
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise Refusal("invalid_model", f"{base} holds no .safetensors weights")
    return files


def eos_id(tok, config):
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is not None:
        return int(eos)
    for t in ["</s>", "<|endoftext|>", "<|im_end|>", "<eos>"]:
        if tok.token_to_id(t) is not None:
            return tok.token_to_id(t)
    raise Refusal("invalid_tokenizer", "the tokenizer has no end-of-sequence token; set eos_token_id in config.json")


def module_of(key):
    """`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` → (module, 'A')."""
    for part in ("lora_A", "lora_B"):
        marker = f".{part}."
        if marker in key:
            module = key.split(marker)[0]
            if module.startswith("base_model.model."):
                module = module[len("base_model.model."):]
            return module, part[-1]
    return None, None


class Progress:
    """The progress file (process 0 only); each line flushed so the worker sees it at once."""

    def __init__(self, path, writer):
        self.file = open(path, "a", encoding="utf-8") if writer else None

    def line(self, obj):
        if self.file:
            self.file.write(json.dumps(obj) + "\n")
            self.file.flush()

    def event(self, **fields):
        self.line({"event": fields})


# ---- training ----

def train(order, progress, accel, cancelled):
    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    spec, known = order["spec"], order.get("digests", {})
    if spec.get("kind") != "train":
        raise Refusal("invalid_option", f"this trainer runs train jobs, not `{spec.get('kind')}`")
    if spec.get("resume") or spec.get("checkpoint_dir"):
        raise Refusal("invalid_option", "checkpoints and resume are not supported by the external trainer")
    cfg = spec["config"]
    method, lora_cfg = cfg["method"], cfg["lora"]
    world = accel.num_processes if accel else 1
    rank = accel.process_index if accel else 0
    device = accel.device if accel else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = Path(spec["base"])
    out = Path(spec["output"])
    if out.exists():
        raise Refusal("output_exists", f"{out} exists; the output must be a new directory")
    torch.manual_seed(cfg["seed"])

    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    model_config = json.loads((base / "config.json").read_text())
    eos = eos_id(tok, model_config)

    # Tasks: the current task's files together, each past file a task (joint: every file one).
    if cfg["schedule"]["kind"] == "joint":
        groups = [("current", [f]) for f in spec["data"]] + [("past", [f]) for f in spec.get("past", [])]
    else:
        groups = [("current", list(spec["data"]))] + [("past", [f]) for f in spec.get("past", [])]
    tasks, data_inputs = [], []
    counts = dict(per_epoch=[], examples=0, truncated_prompt=0, truncated_answer=0, tokens=0, answer_tokens=0)
    for task, (role, files) in enumerate(groups):
        encoded = []
        for f in files:
            examples = read_trace(f)
            enc = [encode(tok, ex, eos, cfg["max_len"]) for ex in examples]
            counts["examples"] += len(enc)
            counts["truncated_prompt"] += sum(1 for e in enc if e[2])
            counts["truncated_answer"] += sum(1 for e in enc if e[3])
            counts["tokens"] += sum(len(e[0]) for e in enc)
            counts["answer_tokens"] += sum(len(e[0]) - e[1] for e in enc)
            data_inputs.append(dict(task=task, role=role, path=str(f), sha256=sha256_file(f, known), examples=len(enc)))
            encoded += [(e[0], e[1]) for e in enc]
        tasks.append(encoded)
    mixture = Mixture(cfg["schedule"], [len(t) for t in tasks], cfg["seed"])
    counts["per_epoch"] = mixture.counts
    per_step = cfg["batch_size"] * cfg["grad_accum"]
    epoch_len = max(len(mixture.pool), 1)
    steps = cfg["max_steps"] or max(-(-(cfg["epochs"] * len(mixture.pool)) // per_step), 1)

    # The model: f32 weights, earlier adapters merged in (frozen either way: stacked and merged
    # give the same function), their A matrices kept for O-LoRA.
    files = weight_files(base)
    base_files = [dict(file=f.name, sha256=sha256_file(f, known)) for f in files]
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    modules = dict(model.named_modules())
    earlier_a, adapter_inputs = {}, []
    for d in map(Path, spec.get("adapters", [])):
        acfg = json.loads((d / "adapter_config.json").read_text())
        weights = load_file(str(d / "adapter_model.safetensors"))
        pairs = {}
        for key, t in weights.items():
            module, part = module_of(key)
            if module:
                pairs.setdefault(module, {})[part] = t.float()
        for module, ab in pairs.items():
            if module not in modules or "A" not in ab or "B" not in ab:
                raise Refusal("adapter_mismatch", f"{d}: adapts `{module}`, which the base does not have")
            r = ab["A"].shape[0]
            alpha = acfg.get("alpha_pattern", {}).get(module.split(".")[-1], acfg["lora_alpha"])
            scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
            with torch.no_grad():
                modules[module].weight += scale * (ab["B"] @ ab["A"])
            earlier_a.setdefault(module, []).append(ab["A"].to(device))
        adapter_inputs.append(dict(path=str(d), files=[
            dict(file=n, sha256=sha256_file(d / n, known)) for n in ("adapter_config.json", "adapter_model.safetensors")]))

    notes = []
    new_lora = []  # (module name, A parameter, B parameter)
    if method in ("lora", "olora"):
        from peft import LoraConfig, get_peft_model
        for p in model.parameters():
            p.requires_grad_(False)
        model = get_peft_model(model, LoraConfig(
            r=lora_cfg["r"], lora_alpha=lora_cfg["alpha"], lora_dropout=lora_cfg["dropout"],
            use_rslora=lora_cfg["rslora"], target_modules=lora_cfg["targets"], bias="none",
            task_type="CAUSAL_LM"))
        inner = dict(model.get_base_model().named_modules())
        layers = model_config["num_hidden_layers"]
        for i, name in enumerate(f"model.layers.{l}.{m}" for l in range(layers) for m in LINEAR_MODULES):
            layer = inner.get(name)
            if layer is None or not hasattr(layer, "lora_A"):
                continue
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            with torch.no_grad():
                a.copy_(torch.from_numpy(lora_a_init(a.shape[0], a.shape[1], cfg["seed"] ^ ((i * GOLDEN) & M64))))
                b.zero_()
            new_lora.append((name, a, b))
        if not new_lora:
            raise Refusal("invalid_option", f"targets {lora_cfg['targets']} match no linear module of the model")
        if method == "olora" and not earlier_a:
            notes.append("O-LoRA without earlier adapters: the orthogonality term is zero, so this run is plain LoRA")
        params = [p for pair in new_lora for p in pair[1:]]
    elif method == "fft":
        selectors = cfg["fft_params"]
        params = []
        for name, p in model.named_parameters():
            trains = not selectors or any(s in name for s in selectors)
            p.requires_grad_(trains)
            if trains:
                params.append(p)
        if not params:
            raise Refusal("invalid_option", f"fft_params {selectors} select no weight of the base")
    else:
        raise Refusal("invalid_option", f"unknown method `{method}`")
    model.to(device)
    model.train()
    for n in notes:
        progress.event(event="note", message=n)
    trainable = sum(p.numel() for p in params)
    progress.event(event="plan", data=data_inputs, counts=counts, steps=steps, trainable_parameters=trainable)

    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                  eps=cfg["adam_eps"], weight_decay=cfg["weight_decay"])
    if world > 1:
        model, optimizer = accel.prepare(model, optimizer)
    olora = cfg["olora"]

    def orth_term():
        total = torch.zeros((), device=device)
        for name, a, _ in new_lora:
            for old in earlier_a.get(name, []):
                o = a @ old.t()
                total = total + (o.abs().sum() if olora["variant"] == "l1" else o.pow(2).sum())
        term = total * olora["lambda"]
        if olora["lambda2"] > 0:
            for p in params:
                n = p.norm()
                if n.item() > 0:
                    term = term + olora["lambda2"] * n
        return term

    losses, run_tokens = [], 0
    started = time.perf_counter()
    epoch_cache = (None, None)
    for step in range(steps):
        if cancelled():
            raise Refusal("cancelled", f"cancelled before step {step + 1}")
        t0 = time.perf_counter()
        items = []
        for p in range(step * per_step, (step + 1) * per_step):
            e, i = divmod(p, epoch_len)
            if epoch_cache[0] != e:
                epoch_cache = (e, mixture.epoch(e))
            if i < len(epoch_cache[1]):
                task, index = epoch_cache[1][i]
                items.append(tasks[task][index])
        if cfg["packing"]:
            batches = pack_batches(items, cfg["batch_size"], cfg["max_len"], eos)
        else:
            batches = [pad_batch(items[k:k + cfg["batch_size"]], eos) for k in range(0, len(items), cfg["batch_size"])]
        answer_tokens = max(sum(int(sum(map(sum, b[2]))) for b in batches), 1)
        step_tokens = sum(len(b[0]) * len(b[0][0]) for b in batches if b[0])
        mine = batches[rank::world]
        loss_sum = torch.zeros((), device=device)
        orth_value = None
        for k, (inp, tgt, mask) in enumerate(mine or [None]):
            sync = k == max(len(mine), 1) - 1
            with (accel.no_sync(model) if world > 1 and not sync else nullcontext()):
                if inp is None or not any(map(any, mask)):
                    # Nothing to learn here, but every process must take part in the step.
                    loss = model(input_ids=torch.tensor([[eos]], device=device)).logits.sum() * 0.0
                else:
                    m = torch.tensor(mask, device=device) > 0
                    logits = model(input_ids=torch.tensor(inp, device=device)).logits
                    ce = torch.nn.functional.cross_entropy(
                        logits[m], torch.tensor(tgt, device=device)[m], reduction="sum") / answer_tokens
                    loss_sum = loss_sum + ce.detach()
                    loss = ce * world  # DDP averages gradients over the processes
                if method == "olora" and orth_value is None and rank == 0:
                    term = orth_term()
                    orth_value = term.item()
                    loss = loss + term * world
                loss.backward()
        if world > 1:
            loss_sum = accel.reduce(loss_sum, reduction="sum")
        loss_value = loss_sum.item()
        total = loss_value + (orth_value or 0.0)
        if not math.isfinite(total):
            raise Refusal("non_finite_loss", f"the loss at step {step + 1} is {total}; lower the learning rate")
        clip = cfg["clip_grad"]
        if clip is not None:
            clipper = accel.clip_grad_norm_ if world > 1 else torch.nn.utils.clip_grad_norm_
            grad_norm = float(clipper(params, clip))
        else:
            grad_norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))
        lr = learning_rate(cfg, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run_tokens += step_tokens
        record = dict(step=step + 1, loss=loss_value, lr=lr, grad_norm=grad_norm, tokens=step_tokens,
                      seconds=time.perf_counter() - t0)
        if orth_value is not None:
            record["orth"] = orth_value
        losses.append(record)
        elapsed = time.perf_counter() - started
        progress.event(event="step", step=step + 1, steps=steps, loss=loss_value, lr=lr,
                       tokens_per_second=run_tokens / max(elapsed, 1e-9),
                       eta_seconds=elapsed / (step + 1) * (steps - step - 1))

    # The output, written by process 0 into a staging directory and renamed.
    if accel:
        accel.wait_for_everyone()
    wall = time.perf_counter() - started
    if rank != 0:
        return None
    staging = out.with_name(out.name + ".partial")
    staging.mkdir(parents=True, exist_ok=False)
    unwrapped = accel.unwrap_model(model) if world > 1 else model
    if method in ("lora", "olora"):
        tensors = {f"base_model.model.{name}.lora_{part}.weight": t.detach().float().cpu().contiguous()
                   for name, a, b in new_lora for part, t in (("A", a), ("B", b))}
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        adapter_config = dict(
            peft_type="LORA", r=lora_cfg["r"], lora_alpha=lora_cfg["alpha"], target_modules=lora_cfg["targets"],
            lora_dropout=lora_cfg["dropout"], bias="none", use_rslora=lora_cfg["rslora"], use_dora=False,
            fan_in_fan_out=False, base_model_name_or_path=str(base), task_type="CAUSAL_LM")
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        output_kind = "adapter"
    else:
        from safetensors import safe_open
        state = unwrapped.state_dict()
        for f in files:
            with safe_open(str(f), framework="pt") as src:
                names = list(src.keys())
                dtype = src.get_slice(names[0]).get_dtype() if names else "F32"
            torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(dtype, torch.float32)
            save_file({n: state[n].detach().to(torch_dtype).cpu().contiguous() for n in names},
                      str(staging / f.name), metadata={"format": "pt"})
        for side in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "generation_config.json", "model.safetensors.index.json"]:
            if (base / side).exists():
                (staging / side).write_bytes((base / side).read_bytes())
        output_kind = "checkpoint"
    tokens = sum(s["tokens"] for s in losses)
    record = dict(
        clreg_version=f"clreg_trainer.py {VERSION} (torch {torch.__version__})", config=cfg,
        output_kind=output_kind, base=dict(path=str(base), files=base_files), adapters=adapter_inputs,
        data=data_inputs, counts=counts, steps=steps, epochs=steps * per_step / max(len(mixture.pool), 1),
        trainable_parameters=trainable,
        seeds=(f"seed {cfg['seed']}: data order and LoRA A as the engine draws them (splitmix64); "
               "dropout masks from torch.manual_seed(seed)"),
        resumed_from=None, notes=notes, losses=losses, wall_seconds=wall, tokens=tokens,
        tokens_per_second=tokens / max(wall, 1e-9))
    (staging / RECORD).write_text(json.dumps(record, indent=2))
    staging.rename(out)
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", required=True, help="the job order the worker wrote (JSON)")
    ap.add_argument("--progress", required=True, help="where to append progress lines (JSON Lines)")
    args = ap.parse_args()
    try:
        from accelerate import Accelerator
        accel = Accelerator()
    except ImportError:
        accel = None
    writer = accel is None or accel.is_main_process
    progress = Progress(args.progress, writer)
    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    # scancel and a deleted Kubernetes Job send SIGTERM: stop between steps.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        order = json.loads(Path(args.order).read_text())
        record = train(order, progress, accel, lambda: stop["now"])
        if record is not None:
            progress.line({"done": {"kind": "train", "output": record}})
        return 0
    except Refusal as e:
        progress.line({"failed": {"code": e.code, "message": str(e)}})
        return 1
    except MemoryError as e:
        progress.line({"failed": {"code": "compute_error", "message": f"out of memory: {e}"}})
        return 1
    except Exception as e:  # noqa: BLE001 - every failure must reach the worker as a line
        code = "io_error" if isinstance(e, OSError) else "compute_error"
        progress.line({"failed": {"code": code, "message": f"{type(e).__name__}: {e}"}})
        return 1


if __name__ == "__main__":
    sys.exit(main())
