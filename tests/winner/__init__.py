"""Tests for raynas.winner."""
