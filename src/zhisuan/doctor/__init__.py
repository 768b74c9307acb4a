"""Environment check (SPEC DEV-4): find every part of the stack, show versions, run a tiny real test of each.

>>> from zhisuan.doctor import run_doctor
>>> report = run_doctor()  # doctest: +SKIP
>>> report.ok  # doctest: +SKIP
True
"""

from __future__ import annotations

from zhisuan.doctor.checks import CHECKS, Check, CheckResult, DoctorReport, run_doctor

__all__ = ["CHECKS", "Check", "CheckResult", "DoctorReport", "run_doctor"]
