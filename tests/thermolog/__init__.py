"""Tests of thermolog/."""
