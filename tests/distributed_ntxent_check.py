"""Run under ``torchrun``: NT-Xent with gathered negatives on W ranks equals the 1-process loss on the global batch.

Every rank takes its contiguous slice of one fixed global batch of distinct float64 projections, computes the
gathered loss (with a negative queue, over two steps so the second step uses queued negatives) and its gradients;
rank 0 compares the rank mean of the losses and the rank mean of the gradients (what DistributedDataParallel
applies) with a plain ``NTXentLoss`` on the whole batch, and checks that every rank holds the same queue. All of it
twice: with plain negatives, and with cluster-aware ones (pseudo-classes gathered with the projections and queued
with them). Exits non-zero on a mismatch; prints ``NTXENT-GATHER-OK`` on rank 0 otherwise.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from monai_cae.losses import NTXentLoss

LOCAL_BATCH, DIM, TEMPERATURE, QUEUE = 3, 5, 0.1, 8


def main() -> int:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    total = LOCAL_BATCH * world_size
    own = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    failures = []
    for variant, step in [(variant, step) for variant in ("all", "cluster_aware") for step in range(2)]:
        if step == 0:
            gathered = NTXentLoss(TEMPERATURE, gather_distributed=True, queue_size=QUEUE)
            single = NTXentLoss(TEMPERATURE, queue_size=QUEUE)
        generator = torch.Generator().manual_seed(step)
        z1 = torch.randn(total, DIM, dtype=torch.float64, generator=generator).requires_grad_()
        z2 = torch.randn(total, DIM, dtype=torch.float64, generator=generator).requires_grad_()
        labels = torch.randint(0, 2, (total,), generator=generator) if variant == "cluster_aware" else None
        loss = gathered(z1[own], z2[own], None if labels is None else labels[own])
        loss.backward()
        # only this rank's rows get gradients; summing over ranks and dividing is DDP's gradient averaging
        parts = torch.cat([loss.detach().reshape(1), z1.grad.reshape(-1), z2.grad.reshape(-1)])
        dist.all_reduce(parts)
        parts /= world_size
        queue = torch.cat([gathered.queue.clone(), gathered.queue_labels[:, None].double()], dim=1)
        queues = [torch.empty_like(queue) for _ in range(world_size)]
        dist.all_gather(queues, queue)
        if rank == 0:
            a, b = z1.detach().requires_grad_(), z2.detach().requires_grad_()
            expected_loss = single(a, b, labels)
            gradients = torch.autograd.grad(expected_loss, (a, b))
            expected = torch.cat([expected_loss.detach().reshape(1), *(g.reshape(-1) for g in gradients)])
            error = (parts - expected).abs().max().item()
            if error > 1e-10:
                failures.append(f"{variant} step {step}: loss/gradients differ by {error:.3e}")
            same_queue = torch.allclose(queue[:, :-1].float(), single.queue)
            same_queue = same_queue and torch.equal(queue[:, -1].long(), single.queue_labels)
            if not all(torch.equal(q, queues[0]) for q in queues) or not same_queue:
                failures.append(f"{variant} step {step}: the queues differ across ranks or from the single-process one")
    dist.destroy_process_group()
    if rank == 0:
        print("\n".join(failures) if failures else "NTXENT-GATHER-OK", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
