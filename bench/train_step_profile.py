"""Where one `wb train` step spends its time on CPU, against a plain PyTorch loop on the same batch.

Loads the embedded SmolLM2-135M with LoRA (r 16, all linear layers), builds one packed batch of `--batch` ×
`--length` tokens from the demo records, and times, in one process and alternating so that a drifting load hits
every variant alike:

* `plain`: `model(input_ids, labels=labels)` (one causal sequence per row, 2D mask), `loss.backward()`, AdamW;
* `wb-mask`: the same with wb's 4D block-diagonal mask and restarting position ids (`PackedCollator`);
* `wb-loss`: wb's mask plus `trained_positions_loss` (the output head only where a label is trained);
* `wb-step`: a whole `WbTrainer.training_step` + optimizer step, as `wb train` runs it (callbacks, logging,
  token counting included);

each in fp32 and under bf16 autocast, plus the collation alone. Prints wall and CPU seconds per step (medians of
`--repeat`; with `--threads 1` CPU time is the work itself, much less sensitive to other jobs than wall time) and
the load average. Run: `.venv/bin/python bench/train_step_profile.py --repeat 3`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--variants", default="plain,wb-mask,wb-loss,wb-step")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from workbench.io.reader import read_records
    from workbench.models import templates as tdata
    from workbench.models.base import load_model, load_tokenizer
    from workbench.train import hf as whf
    from workbench.train import loss as wloss
    from workbench.train import packing
    from workbench.train import prepare as wprepare

    tok = load_tokenizer("embedded")
    model = load_model("embedded", dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    records = read_records(ROOT / "data" / "demo" / "eval.jsonl")
    examples = [tdata.encode(tok, r, "chat", args.length, "responses") for _, r in records[:400]]
    packed = packing.pack(examples, args.length)
    packed.sort(key=lambda pk: -len(pk.input_ids))
    rows = [{"input_ids": pk.input_ids, "labels": pk.labels, "lengths": pk.lengths} for pk in packed[: args.batch]]
    collate = packing.PackedCollator(tok.pad_token_id)
    t = time.perf_counter()
    for _ in range(20):
        batch = collate(rows)
    collate_s = (time.perf_counter() - t) / 20
    plain = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    real = int(batch["attention_mask"][:, 0].diagonal(dim1=-2, dim2=-1).sum())
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    head = wloss.fusable_head(model)
    loss_fn = model.get_base_model().loss_function

    def step(variant: str) -> float:
        model.train()
        if variant == "plain":
            loss = model(**plain).loss
        elif variant == "wb-mask":
            loss = model(**batch).loss
        else:
            loss = wloss.trained_positions_loss(model, batch, None, loss_fn, head)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    trainer = None
    if "wb-step" in args.variants:
        from transformers import TrainingArguments

        targs = TrainingArguments(
            output_dir="/tmp/wb-profile",
            per_device_train_batch_size=args.batch,
            report_to=[],
            disable_tqdm=True,
            remove_unused_columns=False,
            logging_steps=1,
            save_strategy="no",
        )
        trainer = whf.trainer_class()(
            model=model,
            args=targs,
            train_dataset=wprepare.ListDataset(rows),
            data_collator=collate,
            callbacks=whf.callbacks(Path("/tmp/wb-profile-log.jsonl"), None),
        )
        trainer.create_optimizer_and_scheduler(num_training_steps=100)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which is not run here

    def wb_step() -> float:
        assert trainer is not None
        loss = trainer.training_step(model, collate(rows), num_items_in_batch=None)
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    from workbench.precision import Choice

    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    print(
        f"load before: {os.getloadavg()}; threads {torch.get_num_threads()}; batch {args.batch} x {args.length}, "
        f"{real} real tokens; collation {collate_s * 1000:.1f} ms",
        flush=True,
    )
    variants = args.variants.split(",")
    precs = args.precisions.split(",")
    for prec in precs:  # warm-up
        with Choice(prec, "cpu", "").autocast():
            step("plain")
    for r in range(args.repeat):
        order = [(v, pr) for v in variants for pr in precs]
        if r % 2:
            order.reverse()
        for v, pr in order:
            choice = Choice(pr, "cpu", "")
            t, c = time.perf_counter(), time.process_time()
            if v == "wb-step":
                trainer.cpu_autocast = choice.autocast  # type: ignore[union-attr]
                wb_step()
            else:
                with choice.autocast():
                    step(v)
            times.setdefault((v, pr), []).append(time.perf_counter() - t)
            cpu.setdefault((v, pr), []).append(time.process_time() - c)
            print(
                f"  {v} {pr}: {times[(v, pr)][-1]:.2f} s, CPU {cpu[(v, pr)][-1]:.2f} s (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    print(f"load after: {os.getloadavg()}")
    base = {pr: statistics.median(cpu[("plain", pr)]) for pr in precs if ("plain", pr) in cpu}
    print(f"{'variant':<10} {'precision':<9} {'s/step':>7} {'CPU s':>7} {'tok/CPU-s':>9} {'x plain':>8}  all CPU s")
    for (v, pr), ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[(v, pr)])
        rel = base[pr] / cmed if pr in base else float("nan")
        runs = " ".join(f"{x:.2f}" for x in cpu[(v, pr)])
        print(f"{v:<10} {pr:<9} {med:7.2f} {cmed:7.2f} {real / cmed:9.1f} {rel:8.2f}  {runs}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
