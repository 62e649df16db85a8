"""Raghunath, Peng & Jorswieck (2023): energy-efficient power control in cell-free massive MIMO with an
unsupervised GNN over the access points (``gnn``; see README.md)."""
