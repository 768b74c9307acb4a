"""The effective CPU clock, measured: what the cores really run at while all of them are busy.

In a VM ``/proc/cpuinfo`` shows the nominal clock and cpufreq is absent, while the cores run at
their boost clock; the CPU peak model (:mod:`zhisuan.device.peak`) then takes this measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from zhisuan.results import Record

# A chain of dependent integer adds retires one add per cycle on every x86-64 and Arm core, so
# adds per second of the thread's own CPU time is the core clock, even on a loaded machine.
_CLOCK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* CPU time of this thread: time the core spent elsewhere (preemption) does not count */
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 25000000L;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    unsigned long x = 0; double best = 0.0;
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
#if defined(__x86_64__)
            __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
#elif defined(__aarch64__)
            __asm__ volatile("add %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1" : "+r"(x));
#else
#error "no clock loop for this architecture"
#endif
        }
        double mhz = 4.0 * n / (now() - t0) / 1e6;
        if (mhz > best) best = mhz;
    }
    printf("%.1f %lu\n", best, x);
    return 0;
}
"""


@dataclass(frozen=True)
class MeasuredClock(Record):
    """The effective core clock while ``cores`` cores spin at once, or why it was not measured."""

    mhz: float | None
    cores: int
    per_core_mhz: tuple[float, ...] = ()
    method: str = ("dependent integer-add chain (1 add/cycle) over the thread's CPU time, best of 7 "
                   "runs of 100 M adds per core, all cores at once; the fastest core")
    reason: str | None = None


@lru_cache(maxsize=8)
def cached_cpu_clock(cores: int) -> MeasuredClock:
    """:func:`measure_cpu_clock_mhz` once per process and core count (EV-2 and EV-6 share it)."""
    return measure_cpu_clock_mhz(cores)


def measure_cpu_clock_mhz(cores: int = 1, *, compiler: str | None = None, timeout_s: float = 30.0) -> MeasuredClock:
    """Measure the effective clock of ``cores`` busy cores with a tiny C loop (needs a C compiler).

    In a VM ``/proc/cpuinfo`` shows the nominal clock and cpufreq is absent, while the cores run
    at their boost clock; this measures the clock the GEMM actually runs at (scalar code: heavy
    AVX-512 code may run somewhat lower).
    """
    import hashlib
    import os
    import platform
    import shutil
    import subprocess
    import tempfile

    from zhisuan._io import cache_dir

    cores = max(1, int(cores))
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return MeasuredClock(None, cores, reason=f"no clock loop for {platform.machine()}")
    cc = compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return MeasuredClock(None, cores, reason="no C compiler (cc, gcc, clang) to build the clock loop")
    key = hashlib.sha256((_CLOCK_C + platform.machine()).encode()).hexdigest()[:16]
    binary = cache_dir("bin") / f"clock-{key}"
    if not binary.exists():
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "clock.c"
            src.write_text(_CLOCK_C)
            out = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")  # renamed into place: atomic
            try:
                build = subprocess.run([cc, "-O2", "-o", str(out), str(src)], capture_output=True, text=True,
                                       timeout=timeout_s, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return MeasuredClock(None, cores, reason=f"could not run the C compiler {cc}: {exc}")
            if build.returncode != 0:
                out.unlink(missing_ok=True)
                return MeasuredClock(None, cores, reason=f"{cc} could not build the clock loop: "
                                     f"{build.stderr.strip()[-300:]}")
            os.replace(out, binary)
    procs = [subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(cores)]
    values = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout_s)
            if proc.returncode != 0:
                return MeasuredClock(None, cores, reason=f"the clock loop failed: {err.strip()[-200:]}")
            values.append(float(out.split()[0]))
    except subprocess.TimeoutExpired:
        return MeasuredClock(None, cores, reason=f"the clock loop did not finish in {timeout_s} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return MeasuredClock(max(values), cores, tuple(values))
