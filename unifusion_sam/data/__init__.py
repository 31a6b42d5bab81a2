"""Datasets: record types, readers of the official layouts, the synthetic generator."""
