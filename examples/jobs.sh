#!/usr/bin/env bash
# The registry's jobs end to end, on tiny seeded models and the synthetic TRACE suite:
# three sequential training rounds (LoRA, O-LoRA, LoRA) on the server, a TIES merge and a
# LoRA-MoE mix of them, every model scored by eval jobs, and a round series whose report gives
# the score matrix, BWT, FWT and the gain over the base.
#
# Needs a running server and a login (README, Quickstart):
#   clreg login --server http://127.0.0.1:8080 --api-key "$KEY"
#   examples/jobs.sh            # WORK=/tmp/clreg-jobs and COLLAB=lab by default
set -euo pipefail
W=${WORK:-/tmp/clreg-jobs}
C=${COLLAB:-lab}
rm -rf "$W" && mkdir -p "$W"

clreg collab create "$C" --policy semi
clreg local tiny -o "$W/base" --seed 1 --tokenizer bytes --hidden 128 --intermediate 256 --layers 2
clreg push "$W/base" --collab "$C" --name base
clreg local synth -o "$W/suite" --seed 3 --train 60 --eval 4 --test 12
# semi: the registry keeps the manifests; the data itself travels with each job.
for t in cstance fomc meetingbank; do
  for split in train test; do
    clreg dataset push "$W/suite/$t/$split.json" --collab "$C" --task "$t" --metric exact --manifest-only
  done
done

S=(--epochs 4 --batch-size 8 --grad-accum 1 --lr 0.01 --r 8 --seed 1)
clreg train --collab "$C" --base "$C/base" --data "$W/suite/cstance/train.json" --name r1 "${S[@]}" --wait
clreg train --collab "$C" --base "$C/base" --adapter "$C/r1" --method olora \
  --data "$W/suite/fomc/train.json" --name r2 "${S[@]}" --wait
clreg train --collab "$C" --base "$C/base" --adapter "$C/r1" --adapter "$C/r2" \
  --data "$W/suite/meetingbank/train.json" --name r3 "${S[@]}" --wait

cat > "$W/ties.yml" <<YML
merge_method: ties
base_model: $C/base
models:
  - model: $C/r1
    parameters: {weight: 1.0, density: 0.5}
  - model: $C/r2
    parameters: {weight: 1.0, density: 0.5}
  - model: $C/r3
    parameters: {weight: 1.0, density: 0.5}
dtype: float32
seed: 7
YML
clreg merge --collab "$C" --config "$W/ties.yml" --name ties --wait

cat > "$W/moe.yml" <<YML
base_model: $C/base
gate_mode: hidden
experts_per_token: 2
experts:
  - source_model: $C/r1
    positive_prompts: ["stance of the text"]
  - source_model: $C/r2
    positive_prompts: ["monetary policy"]
  - source_model: $C/r3
    positive_prompts: ["summarise the meeting"]
YML
clreg mix --collab "$C" --config "$W/moe.yml" --name moe --lora --wait

TASKS=()
for t in cstance fomc meetingbank; do
  metric=exact; [ "$t" = meetingbank ] && metric=rouge_l
  TASKS+=(--task "$t:$metric:$W/suite/$t/test.json")
done
for m in base r1 r2 r3 ties; do
  clreg eval "$C/$m" --collab "$C" "${TASKS[@]}" --wait
done

clreg series create seq --collab "$C" --base "$C/base" --tasks cstance,fomc,meetingbank
for r in r1 r2 r3; do clreg series add seq "$C/$r" --collab "$C"; done
clreg series report seq --collab "$C"
clreg lineage "$C/moe"
clreg ledger --collab "$C" | tail -5
