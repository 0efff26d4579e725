"""Shared test settings."""

import torch

# The suite trains many tiny models: one thread is fastest for them and keeps runs repeatable
# on machines where other work competes for the cores.
torch.set_num_threads(1)
