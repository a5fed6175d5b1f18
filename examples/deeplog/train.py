"""Train the example DeepLog model for a few seconds and save ``model.pt`` (a state_dict).

    python examples/deeplog/train.py --out model.pt --trainer-state trainer_state.json

The data is synthetic: sessions that walk through a few fixed workflows of log-template ids with random detours, so
the next id is predictable and the loss falls within a few epochs. ``--trainer-state`` also writes the training log
in the Hugging Face Trainer's ``trainer_state.json`` format (``log_history`` with loss, grad_norm, learning_rate and
eval_loss), which ``onnxship doctor train-log`` reads like any real Trainer run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import SEQ_LEN, VOCAB_SIZE, build_model  # noqa: E402


def synthetic_windows(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of ``SEQ_LEN`` ids and the id that follows each one."""
    workflows = [torch.arange(start, start + 8) % VOCAB_SIZE for start in (0, 7, 14, 21)]
    xs, ys = [], []
    for _ in range(n):
        flow = workflows[int(torch.randint(len(workflows), (1,), generator=generator))]
        offset = int(torch.randint(len(flow), (1,), generator=generator))
        seq = flow.roll(-offset).repeat(3)[: SEQ_LEN + 1].clone()
        if torch.rand(1, generator=generator).item() < 0.1:  # a detour: one random id in the window
            seq[int(torch.randint(SEQ_LEN, (1,), generator=generator))] = int(
                torch.randint(VOCAB_SIZE, (1,), generator=generator)
            )
        xs.append(seq[:SEQ_LEN])
        ys.append(seq[SEQ_LEN])
    return torch.stack(xs), torch.stack(ys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("model.pt"), help="state_dict to write")
    parser.add_argument("--trainer-state", type=Path, help="also write the log as an HF trainer_state.json")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(0)
    x, y = synthetic_windows(args.samples, generator)
    x_eval, y_eval = synthetic_windows(128, generator)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    batch, step = 32, 0
    steps_per_epoch = (len(x) + batch - 1) // batch
    for epoch in range(args.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), 5.0))
            optimizer.step()
            step += 1
            if step % 4 == 0:
                history.append(
                    {
                        "epoch": round(step / steps_per_epoch, 4),
                        "grad_norm": grad_norm,
                        "learning_rate": args.lr,
                        "loss": round(loss.item(), 4),
                        "step": step,
                    }
                )
        model.eval()
        with torch.no_grad():
            eval_loss = float(loss_fn(model(x_eval), y_eval))
        history.append({"epoch": float(epoch + 1), "eval_loss": round(eval_loss, 4), "step": step})
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  eval_loss {eval_loss:.4f}  "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")
    if args.trainer_state:
        state = {"epoch": float(args.epochs), "global_step": step, "log_history": history}
        args.trainer_state.write_text(json.dumps(state, indent=2) + "\n")
        print(f"wrote {args.trainer_state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
