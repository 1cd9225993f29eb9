"""Shared by every test file: one thread for torch, in these processes and in those they start (the scripts,
the Jupyter kernels). pytest -n 2 runs two tests at once on two cores, and torch's threads busy-wait, so more
threads than cores make a step many times slower."""
import os
import torch

os.environ['OMP_NUM_THREADS'] = '1'
torch.set_num_threads(1)
# an optimizer's first construction imports torch._dynamo (2 s): here, once, rather than in every script that
# test_smoke.run starts as a fork of this process
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
