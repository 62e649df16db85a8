"""Raghunath, Peng & Jorswieck (2023): energy-efficient power control in cell-free massive MIMO with an
unsupervised GNN over the access points (work in progress: the GNN model; the learner comes next)."""
