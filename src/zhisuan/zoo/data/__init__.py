"""Offline evaluation data made here (rendered, seeded), never downloaded."""
