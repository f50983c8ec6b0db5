"""One rank of the DDP test (run by ``torchrun --nproc-per-node 2``): trains a small model on a toy
dataset file with the gloo backend and writes what this rank saw and its final weights."""
from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

from hipnnts_kernels.training import TrainConfig, Trainer

data, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
config = TrainConfig(data=data, out=out, device="cpu", epochs=2, batch_size=4, n_features=8, n_sensitivities=4,
                     n_interaction_layers=1, n_atom_layers=1, split_by="conformer", progress=False,
                     checkpoint_every=3)
trainer = Trainer(config)
seen = [torch.cat(trainer.epoch_batches(epoch)).tolist() for epoch in range(config.epochs)]
finish, trained = trainer._finish, []


def snapshot_then_finish():
    """The weights as training left them (the final evaluation then loads best.pt from disk)."""
    trained.append(torch.cat([p.detach().flatten().double() for p in trainer.model.parameters()]))
    return finish()


trainer._finish = snapshot_then_finish
summary = trainer.run()
weights = trained[0]
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(dict(rank=rank, world_size=int(os.environ["WORLD_SIZE"]), seen=seen,
                   train=trainer.splits[0].tolist(), weights=hashlib.sha256(weights.numpy().tobytes()).hexdigest(),
                   weight_sum=float(weights.sum()), test=summary["metrics"]["test"]), f)
