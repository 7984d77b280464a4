"""Does `torch.compile` pay for the training step (issue 16)?  The force loss differentiates the forces, which
are themselves a gradient, so the compiled graph must support a double backward.  Times eager and compiled
steps interleaved (the same batches, alternating), so a busy machine slows both alike.

    OMP_NUM_THREADS=1 python lab/compile_train_step.py DATA.h5 [--model tiny] [--backend inductor] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and variant")
    parser.add_argument("--form", choices=("module", "func"), default="func",
                        help="module: compile the model's forward (forces by autograd outside it); func: compile "
                             "energy and its gradient together (torch.func.grad_and_value), one backward through it")
    parser.add_argument("--donated-buffers", action="store_true",
                        help="keep AOTAutograd's donated buffers (they refuse create_graph=True)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.donated_buffers:
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    from deploycc.data.schema import read_h5
    from deploycc.model import preset_config
    from deploycc.train.batches import Prepared, distillation_loss, size_batches
    from deploycc.train.loop import initial_model

    data = read_h5(args.data)
    eager = initial_model(preset_config(args.model), data, "cpu")
    prepared = Prepared.of(data, eager.cutoff)
    batches = size_batches(prepared.sizes(), args.batch_size, np.random.default_rng(0))

    def stepper(model):
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(idx) -> float:
            loss = distillation_loss(model, prepared.batch(idx, "cpu"), len(idx), 10.0, 1.0)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            return float(loss)
        return step

    import copy

    compiled_model = copy.deepcopy(eager)
    if args.form == "module":
        compiled_model.forward = torch.compile(compiled_model.forward, backend=args.backend, dynamic=True)
        compiled_step = stepper(compiled_model)
    else:
        compiled_step = func_stepper(compiled_model, prepared, args.backend)
    variants = {"eager": stepper(eager), f"compiled ({args.backend}, {args.form})": compiled_step}
    started = time.perf_counter()
    try:
        compiled_step(batches[0])
    except Exception as exc:  # noqa: BLE001 - the answer of the trial is that it fails, and how
        print(f"torch {torch.__version__}: compiling the step fails: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:400]}")
        traceback.print_exc(limit=3)
        return
    print(f"first compiled step (compilation): {time.perf_counter() - started:.1f} s")
    if args.form == "func":
        check_gradients(eager, compiled_model, prepared, batches[1], args.backend)
    for idx in batches[1:4]:
        for step in variants.values():
            step(idx)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        chosen = [batches[(4 + r * args.steps + k) % len(batches)] for k in range(args.steps)]
        for name, step in variants.items():
            t = time.perf_counter()
            for idx in chosen:
                step(idx)
            times[name].append((time.perf_counter() - t) / args.steps)
    frames = np.mean([len(b) for b in batches])
    base = statistics.median(times["eager"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:22s} median {1e3 * med:7.1f} ms/step ({min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}), "
              f"{frames / med:5.0f} frames/s, {base / med:.2f}x eager")


def check_gradients(eager, other, prepared, idx, backend) -> None:
    """The compiled loss and its parameter gradients against eager ones, on the same weights and batch."""
    from deploycc.train.batches import distillation_loss

    other.load_state_dict(eager.state_dict())
    loss = distillation_loss(eager, prepared.batch(idx, "cpu"), len(idx), 10.0, 1.0)
    reference = torch.autograd.grad(loss, list(eager.parameters()))
    step = func_stepper(other, prepared, backend, learning_rate=0.0)
    step(idx)
    worst = max(float((p.grad - r).abs().max() / (r.abs().max() + 1e-30)) for p, r in zip(other.parameters(), reference))
    print(f"compiled vs eager: loss {float(step.last_loss):.6g} vs {float(loss):.6g}, worst parameter-gradient "
          f"difference {worst:.1e} of the gradient's largest component")


def func_stepper(model, prepared, backend, learning_rate: float = 1e-4):
    """A step whose energies and edge-vector gradients come from one compiled torch.func function, so the loss's
    backward is a first-order backward through the compiled graph."""
    from deploycc.model.forces import forces_and_virials

    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def total_energy(vectors, p, numbers, neighbours, reverse):
        energies = torch.func.functional_call(model, (p, buffers), (numbers, vectors, neighbours, reverse))
        return energies.sum(), energies

    @torch.compile(backend=backend, dynamic=True)
    def energies_and_grad(p, numbers, vectors, neighbours, reverse):
        grad, (_, energies) = torch.func.grad_and_value(total_energy, has_aux=True)(vectors, p, numbers, neighbours,
                                                                                  reverse)
        return energies, grad

    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)

    def step(idx) -> float:
        batch = prepared.batch(idx, "cpu")
        numbers, vectors, neighbours, reverse, system, ref_forces, ref_energies = batch[:7]
        energies, grad = energies_and_grad(params, numbers, vectors, neighbours, reverse)
        forces, _ = forces_and_virials(grad, vectors, reverse)
        count = len(idx)
        totals = torch.zeros(count, dtype=energies.dtype).index_add(0, system, energies)
        atoms = torch.bincount(system, minlength=count).to(energies.dtype)
        e_err = (totals.double() - ref_energies).float() / atoms
        loss = 10.0 * (e_err ** 2).mean() + ((forces - ref_forces) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        step.last_loss = loss.detach()
        if learning_rate:
            optimiser.step()
        return float(loss.detach())
    return step


if __name__ == "__main__":
    main()
