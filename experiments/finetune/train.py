"""
Fine-tune a pretrained model with LoRA (SFT), then DPO on its own samples, on several processes.

This is the MUTABLE file of the `finetune` experiment (the Looper-Math recipe at a small size).
The starting point is a checkpoint prepare built once, offline (`autoresearch prepare
--base-model`): a small GPT pretrained on worked additions of up to 4 digits. This file

1. wraps it with LoRA adapters (`peft`) on its linear layers and trains them on the
   `arithmetic` dataset's problems (1..6 digits), with the loss on the completion only
   (everything after `=`): supervised fine-tuning;
2. for the last DPO_SHARE of the budget, runs rounds of online DPO: each rank samples
   completions of fresh training prompts from the current model, pairs a correct one (right
   answer after `</think>`) with an incorrect one for the same prompt, and takes DPO steps
   against the model as it was at the start of the round (the reference);
3. merges the adapters into the weights and hands the plain model off on rank 0: prepare's
   `arith` evaluator decodes held-out problems greedily in its own process (two thirds of
   1..6 digits, one third of 7..8) and counts exact answers. Higher is better.

It runs under torchrun (the experiment's run line, `python -m prepare.launch`): one rank per
GPU with NCCL, or 2 CPU ranks with gloo; DistributedDataParallel averages the adapters' grads.

Run:  python -m prepare.launch train.py   (from this folder; tiny CPU configuration without CUDA)
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, on purpose)
import time

T0 = time.time()

import math
import os
import random
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch.nn.parallel import DistributedDataParallel

from prepare import DEVICE, TIME_BUDGET, Tokenizer, hand_off_decoder, make_dataloader
from prepare.arithmetic import MAX_DIGITS, is_validation
from prepare.basemodel import load_base
from prepare.evaluate_arith import DECODE_LEN, solved

# ---------------------------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------------------------

USE_CUDA = DEVICE == "cuda" and torch.cuda.is_available()

SEQ_LEN = DECODE_LEN  # rows as long as the evaluator's
LORA_RANK = 16  # rank of each adapter
LORA_ALPHA = 32  # adapter scale = LORA_ALPHA / LORA_RANK
LORA_DROPOUT = 0.0
LORA_TARGETS = ["qkv", "proj", "fc", "out"]  # the base model's linear layers
BATCH_SIZE = 64  # rows per rank per SFT step
SFT_LR = 2e-3  # AdamW lr of the adapters during SFT
WARMUP_RATIO = 0.02  # share of the SFT phase warming the lr up
DPO_SHARE = 0.25  # share of the budget spent on DPO at the end (0: SFT only)
DPO_LR = 2e-4  # AdamW lr of the adapters during DPO
DPO_BETA = 0.1  # DPO temperature: how far the policy may move from the reference
DPO_PROMPTS = 64  # prompts per rank per round
DPO_SAMPLES = 4  # completions sampled per prompt
DPO_TEMPERATURE = 1.0  # sampling temperature
DPO_STEPS_PER_ROUND = 4  # DPO steps on one round's pairs before sampling again
GRAD_CLIP = 1.0
EVAL_BATCH_SIZE = 256  # rows per call of the exported program when the evaluator decodes
SEED = 1337

if not USE_CUDA:  # tiny CPU configuration: a smoke run of seconds (scaled down, not replaced)
    BATCH_SIZE = max(1, BATCH_SIZE // 8)  # 64 -> 8
    DPO_PROMPTS = max(1, DPO_PROMPTS // 8)  # 64 -> 8
    DPO_STEPS_PER_ROUND = max(1, DPO_STEPS_PER_ROUND // 2)  # 4 -> 2
    EVAL_BATCH_SIZE = max(1, EVAL_BATCH_SIZE // 8)  # 256 -> 32

# ---------------------------------------------------------------------------------------------
# Helpers: the completion mask, sampling, sequence log-probabilities
# ---------------------------------------------------------------------------------------------


def completion_mask(x, bos_id, eq_id):
    """True where the target y[t] belongs to a completion: an `=` came after the last BOS in x[:t+1]."""
    seen = torch.cumsum(x == eq_id, dim=1)
    at_bos = torch.cummax(torch.where(x == bos_id, seen, torch.zeros_like(seen)), dim=1).values
    return seen > at_bos


def training_prompts(rng, n):
    """`n` training problems (a, b) as the dataset draws them, never a validation pair."""
    out = []
    while len(out) < n:
        a, b = (rng.randint(0, 10 ** rng.randint(1, MAX_DIGITS) - 1) for _ in range(2))
        if not is_validation(a, b):
            out.append((a, b))
    return out


@torch.no_grad()
def sample(model, prompts, special, temperature, device, deadline):
    """Sampled completions of token-id prompts (stop token included when there was one); rows
    still open at `deadline` (time.time()) end where they are, unfinished (so: incorrect)."""
    n = len(prompts)
    rows = torch.zeros((n, SEQ_LEN), dtype=torch.long, device=device)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    for r, p in enumerate(prompts):
        rows[r, : len(p)] = torch.tensor(p, device=device)
    done = lengths >= SEQ_LEN
    index = torch.arange(n, device=device)
    while not bool(done.all()) and time.time() < deadline:
        logits = model(rows)[index, lengths - 1] / temperature
        nxt = torch.multinomial(F.softmax(logits.float(), dim=-1), 1).squeeze(1)
        write = ~done
        rows[index[write], lengths[write]] = nxt[write]
        lengths = torch.where(write, lengths + 1, lengths)
        done = done | torch.isin(nxt, special) | (lengths >= SEQ_LEN)
    rows, lengths = rows.tolist(), lengths.tolist()
    return [rows[r][len(prompts[r]) : lengths[r]] for r in range(n)]


def sequence_logprobs(model, sequences, starts, device):
    """Sum of log p(token) over each sequence's tokens from index `starts[i]` on."""
    rows = torch.zeros((len(sequences), SEQ_LEN + 1), dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), SEQ_LEN), dtype=torch.bool, device=device)
    for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)):
        seq = seq[: SEQ_LEN + 1]
        rows[i, : len(seq)] = torch.tensor(seq, device=device)
        mask[i, start - 1 : len(seq) - 1] = True
    logp = F.log_softmax(model(rows[:, :-1]).float(), dim=-1).gather(-1, rows[:, 1:, None]).squeeze(-1)
    return (logp * mask).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def main():
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if USE_CUDA else "cpu")
    if USE_CUDA:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    if world > 1:
        dist.init_process_group("nccl" if USE_CUDA else "gloo")
    torch.manual_seed(SEED + rank)
    rng = random.Random(SEED + rank)
    say = print if rank == 0 else (lambda *a, **k: None)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=USE_CUDA)

    tokenizer = Tokenizer.load()
    bos_id, eq_id = tokenizer.bos_id, tokenizer.encode("=")[0]
    special = torch.tensor(sorted(tokenizer.special_ids), device=device)
    base, config = load_base()
    lora = LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS
    )
    peft_model = get_peft_model(base, lora).to(device)
    model = DistributedDataParallel(peft_model) if world > 1 else peft_model
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=SFT_LR, betas=(0.9, 0.95), weight_decay=0.0)
    num_params = sum(p.numel() for p in peft_model.parameters())
    say(
        f"ranks: {world} ({'nccl' if USE_CUDA else 'gloo'}) | base: depth {config['depth']} width {config['dim']}"
        f" | params: {num_params / 1e6:.2f}M | lora: {sum(p.numel() for p in trainable) / 1e6:.3f}M"
        f" | budget: {TIME_BUDGET:.0f}s"
    )

    def clock(seconds):
        """Rank 0's training seconds, the same on every rank: phases and the end are decided together."""
        t = torch.tensor([seconds], dtype=torch.float64, device=device)
        if world > 1:
            dist.broadcast(t, 0)
        return float(t.item())

    def check(loss_f, step):
        if not math.isfinite(loss_f) or loss_f > 100:
            print(f"step {step:05d} | loss: {loss_f}")
            print("FAIL")
            sys.exit(1)

    # --- SFT: LoRA on the completions of packed training problems -------------------------
    sft_end = TIME_BUDGET * (1 - DPO_SHARE)
    loader = make_dataloader(tokenizer, BATCH_SIZE * world, SEQ_LEN, "train", device=device)
    training_time, step, sft_steps = 0.0, 0, 0
    while clock(training_time) < sft_end:
        t_step = time.time()
        progress = training_time / sft_end
        optimizer.param_groups[0]["lr"] = SFT_LR * min(1.0, progress / WARMUP_RATIO) * (1 - 0.9 * progress)
        x, y, epoch = next(loader)
        x, y = x[rank * BATCH_SIZE : (rank + 1) * BATCH_SIZE], y[rank * BATCH_SIZE : (rank + 1) * BATCH_SIZE]
        mask = completion_mask(x, bos_id, eq_id)
        with autocast:
            logits = model(x)
        losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        loss = (losses * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_f = loss.item()
        check(loss_f, step)
        training_time += time.time() - t_step
        step, sft_steps = step + 1, sft_steps + 1
        if step % 10 == 0:
            say(
                f"step {step:05d} ({100 * min(training_time / TIME_BUDGET, 1):.1f}%) | loss: {loss_f:.6f} | sft | epoch: {epoch}"
            )

    # --- DPO: online rounds on pairs of the model's own samples ---------------------------
    for group in optimizer.param_groups:
        group["lr"] = DPO_LR
    dpo_steps = pairs_total = samples_total = correct_total = 0
    while DPO_SHARE > 0 and (now := clock(training_time)) < TIME_BUDGET:
        t_step = time.time()
        deadline = t_step + TIME_BUDGET - now  # sampling never runs past the budget
        problems = training_prompts(rng, DPO_PROMPTS)
        prompts = [[bos_id, *tokenizer.encode(f"{a}+{b}=")] for a, b in problems]
        peft_model.eval()
        with autocast:
            completions = sample(
                peft_model,
                [p for p in prompts for _ in range(DPO_SAMPLES)],
                special,
                DPO_TEMPERATURE,
                device,
                deadline,
            )
        peft_model.train()
        chosen, rejected, starts = [], [], []
        for i, (a, b) in enumerate(problems):
            outs = completions[i * DPO_SAMPLES : (i + 1) * DPO_SAMPLES]
            ok = [
                solved(tokenizer.decode([t for t in c if t not in tokenizer.special_ids]), a, b) for c in outs
            ]
            correct_total += sum(ok)
            samples_total += len(ok)
            if any(ok) and not all(ok):
                chosen.append(prompts[i] + outs[ok.index(True)])
                rejected.append(prompts[i] + outs[ok.index(False)])
                starts.append(len(prompts[i]))
        n_pairs = torch.tensor([len(chosen)], device=device)
        if world > 1:
            dist.all_reduce(n_pairs, op=dist.ReduceOp.MIN)  # every rank steps together, or none does
        if int(n_pairs.item()) > 0:
            pairs_total += len(chosen)
            with torch.no_grad(), autocast:
                ref = sequence_logprobs(peft_model, chosen, starts, device) - sequence_logprobs(
                    peft_model, rejected, starts, device
                )
            for _ in range(DPO_STEPS_PER_ROUND):
                with autocast:
                    both = sequence_logprobs(model, chosen + rejected, starts + starts, device)
                margin = both[: len(chosen)] - both[len(chosen) :] - ref
                loss = -F.logsigmoid(DPO_BETA * margin).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                check(loss.item(), step)
                step, dpo_steps = step + 1, dpo_steps + 1
            say(
                f"step {step:05d} ({100 * min(training_time / TIME_BUDGET, 1):.1f}%) | loss: {loss.item():.6f} | dpo"
                f" | pairs: {len(chosen)} | correct: {correct_total}/{samples_total}"
            )
        training_time += time.time() - t_step

    # --- hand-off: the adapters merged into plain weights, from rank 0 ----------------------
    if world > 1:
        dist.barrier()
    if rank == 0:
        merged = peft_model.merge_and_unload()
        with autocast:
            hand_off_decoder(merged, EVAL_BATCH_SIZE)
        print("---")
        print(f"training_seconds: {training_time:.1f}")
        print(f"total_seconds:    {time.time() - T0:.1f}")
        print(f"peak_vram_mb:     {torch.cuda.max_memory_allocated() / 1024**2 if USE_CUDA else 0.0:.1f}")
        print(f"num_steps:        {step}")
        print(f"sft_steps:        {sft_steps}")
        print(f"dpo_steps:        {dpo_steps}")
        print(f"dpo_pairs:        {pairs_total}")
        print(f"dpo_sample_correct: {correct_total / samples_total if samples_total else 0.0:.4f}")
        print(f"world_size:       {world}")
        print(f"num_params_M:     {num_params / 1e6:.2f}")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
