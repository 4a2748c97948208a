"""Tests of edge_modules/."""
