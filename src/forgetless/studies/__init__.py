"""Studies: each a set of RunConfigs executed through the run store and the one sweep runner
(resumable, cached, parallel the same way), plus a pure analysis of their Results and of the
weights they stored (:mod:`forgetless.analysis`, :mod:`forgetless.summaries`).

- :mod:`~forgetless.studies.plasticity`: loss of plasticity on a long permuted stream;
- :mod:`~forgetless.studies.overlap`: representation overlap against forgetting over rotations;
- :mod:`~forgetless.studies.landscape`: the loss landscape around the task-A solution;
- :mod:`~forgetless.studies.frontier`: the stability-plasticity frontier of strengths;
- :mod:`~forgetless.studies.trajectory`: weight-space paths on their PCA plane.
"""
