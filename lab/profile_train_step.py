"""Where a training step of the student goes (issue 16): frames/s of the force-loss step (forward, forces by
autograd with create_graph, loss, backward through the double backward, AdamW) and the top operators by
self CPU time.  `OMP_NUM_THREADS=1 python lab/profile_train_step.py DATA.h5 [--model tiny] [--batch-size 16]`."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from deploycc.data.schema import read_h5
    from deploycc.model import preset_config
    from deploycc.train.batches import Prepared, distillation_loss, size_batches
    from deploycc.train.loop import initial_model

    data = read_h5(args.data)
    model = initial_model(preset_config(args.model), data, "cpu")
    prepared = Prepared.of(data, model.cutoff)
    batches = size_batches(prepared.sizes(), args.batch_size, np.random.default_rng(0))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(idx) -> None:
        loss = distillation_loss(model, prepared.batch(idx, "cpu"), len(idx), 10.0, 1.0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for idx in batches[:5]:
        step(idx)
    frames, started = 0, time.perf_counter()
    for k in range(args.steps):
        idx = batches[k % len(batches)]
        step(idx)
        frames += len(idx)
    seconds = time.perf_counter() - started
    atoms = np.mean([sum(prepared.sizes()[i] for i in batches[k % len(batches)]) for k in range(args.steps)])
    print(f"{args.model}, batch {args.batch_size} ({atoms:.0f} atoms): {1e3 * seconds / args.steps:.1f} ms/step, "
          f"{frames / seconds:.0f} frames/s, {atoms * args.steps / seconds:.0f} atoms/s (1 thread)")
    assembly = time.perf_counter()
    for k in range(args.steps):
        prepared.batch(batches[k % len(batches)], "cpu")
    print(f"batch assembly alone: {1e3 * (time.perf_counter() - assembly) / args.steps:.2f} ms/step")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for idx in batches[:10]:
            step(idx)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
