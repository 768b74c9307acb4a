"""MLPerf LoadGen driver: any zhisuan runtime under the four scenarios, auto-calibrated (EV-5).

LoadGen (PyPI ``mlcommons-loadgen``, imported as ``mlperf_loadgen``) decides *when* queries are
issued and measures every latency; this package is the system under test (SUT) and the query
sample library (QSL) around a :class:`~zhisuan.runtime.base.Runtime`, plus what LoadGen leaves
to its users and they get wrong most often: the expected latency / QPS settings. The flow, one
module a stage:

1. ``samples``: :class:`SampleSet` holds the samples (random from the signature, ``.npz`` files,
   or a zoo model's evaluation inputs), all in memory.
2. ``sut``: :class:`BatchRunner` turns a list of sample indices into one real batch
   (concatenated along the batch axis, padded where a padding rule says so) or runs them one by
   one when the model has a fixed batch size; :func:`run_loadgen` runs LoadGen once over it.
3. ``calibration``: :func:`calibrate` times real batches of 1, 2, 4, ... samples.
4. ``plan``: :func:`plan_scenario` (a pure function) turns those numbers into LoadGen settings
   that make the run VALID the first time: expected latency / QPS, samples per query, the Server
   QPS under its latency bound, and query counts large enough for LoadGen's early-stopping rule.
5. ``mllog``: :func:`parse_mllog` reads LoadGen's ``:::MLLOG`` detail log into a
   :class:`LoadGenSummary`.
6. ``run``: :func:`run_scenario` runs a planned scenario; if LoadGen still says INVALID,
   :func:`adjust_plan` corrects the settings once from LoadGen's own reported numbers and the
   scenario runs again; both attempts are recorded in the :class:`BenchResult`.

These are not official MLPerf results: the minimum duration is short (official: 600 s), the
settings are calibrated here rather than fixed by the rules, and nothing is audited.

>>> from zhisuan.bench.loadgen import parse_mllog, LoadGenSummary
>>> text = ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {}}'
>>> LoadGenSummary.from_entries(parse_mllog(text)).valid
True
"""

# Beyond __all__, the tuning constants, MAX_BATCH, Progress (now zhisuan.progress.Progress) and
# OFFICIAL_NOTE are re-exported (``X as X``): they were public names of the single module this
# package replaces.
from zhisuan.bench.loadgen.calibration import (
    BATCH_SIZES,
    BatchTiming,
    Calibration,
    calibrate,
    measure_dispatch_ms,
)
from zhisuan.bench.loadgen.calibration import PROBE_MAX_SAMPLES as PROBE_MAX_SAMPLES
from zhisuan.bench.loadgen.mllog import LoadGenSummary, parse_mllog, read_mllog
from zhisuan.bench.loadgen.plan import (
    EARLY_STOPPING_MIN_QUERIES,
    SCENARIOS,
    LoadGenSettings,
    Scenario,
    ScenarioPlan,
    adjust_plan,
    plan_scenario,
)
from zhisuan.bench.loadgen.plan import EXPECTED_LATENCY_FRACTION as EXPECTED_LATENCY_FRACTION
from zhisuan.bench.loadgen.plan import MULTISTREAM_SAMPLES_PER_QUERY as MULTISTREAM_SAMPLES_PER_QUERY
from zhisuan.bench.loadgen.plan import OFFLINE_QPS_MARGIN as OFFLINE_QPS_MARGIN
from zhisuan.bench.loadgen.plan import SERVER_BOUND_FACTOR as SERVER_BOUND_FACTOR
from zhisuan.bench.loadgen.plan import SERVER_MIN_BOUND_MS as SERVER_MIN_BOUND_MS
from zhisuan.bench.loadgen.plan import SERVER_MIN_QUERIES as SERVER_MIN_QUERIES
from zhisuan.bench.loadgen.plan import SERVER_RERUN_P99_FRACTION as SERVER_RERUN_P99_FRACTION
from zhisuan.bench.loadgen.plan import SERVER_RERUN_QUERY_FACTOR as SERVER_RERUN_QUERY_FACTOR
from zhisuan.bench.loadgen.plan import SERVER_UTILIZATION as SERVER_UTILIZATION
from zhisuan.bench.loadgen.plan import SINGLESTREAM_MIN_QUERIES as SINGLESTREAM_MIN_QUERIES
from zhisuan.bench.loadgen.run import OFFICIAL_NOTE as OFFICIAL_NOTE
from zhisuan.bench.loadgen.run import BenchResult, run_scenario
from zhisuan.bench.loadgen.samples import SampleSet, dynamic_batch, npz_samples, random_samples
from zhisuan.bench.loadgen.sut import MAX_BATCH as MAX_BATCH
from zhisuan.bench.loadgen.sut import BatchRunner, LoadGenRun, import_loadgen, run_loadgen
from zhisuan.progress import Progress as Progress

__all__ = [
    "BATCH_SIZES",
    "EARLY_STOPPING_MIN_QUERIES",
    "SCENARIOS",
    "BatchRunner",
    "BatchTiming",
    "BenchResult",
    "Calibration",
    "LoadGenRun",
    "LoadGenSettings",
    "LoadGenSummary",
    "SampleSet",
    "Scenario",
    "ScenarioPlan",
    "adjust_plan",
    "calibrate",
    "dynamic_batch",
    "import_loadgen",
    "measure_dispatch_ms",
    "npz_samples",
    "parse_mllog",
    "plan_scenario",
    "random_samples",
    "read_mllog",
    "run_loadgen",
    "run_scenario",
]
