"""Benchmarks: statistics, workloads, memory, measurement, the per-target worker processes, reports, plots,
and the large-system scaling sweep."""

from .driver import BenchConfig, BenchResult, TargetSummary, latest_path, run_bench, save_latest, summarize_targets
from .measure import BenchRecord, MeasureSettings, measure_runner
from .report import header_lines, table_rows, to_markdown
from .stats import percentile, summarize_times

__all__ = ["BenchConfig", "BenchResult", "BenchRecord", "MeasureSettings", "TargetSummary", "header_lines",
           "latest_path", "measure_runner", "percentile", "run_bench", "save_latest", "summarize_targets",
           "summarize_times", "table_rows", "to_markdown"]
