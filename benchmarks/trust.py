"""Issue 12's table: how much of the run store's trust is checked, from the tests themselves.

Runs the crash tests (``tests/test_faults.py``) and the trust tests (``tests/test_trust.py``),
slow ones included, with pytest's JUnit report, and counts passed cases per row of the table:

- kill points: a run killed with SIGKILL (or stopped with Ctrl-C) at each write point, or a
  sweep killed at each kind of write point, then resumed to exactly the uninterrupted matrix,
  each event once;
- damaged files detected: a checkpoint, result, config, events, weights or index file damaged
  after it was written, reported with its name, never used as a result;
- crafted files refused: checkpoints naming classes off the allow-list (the tempfile gadget),
  absurdly nested JSON, TOML or state, run ids and scenarios that lead outside the store, gzip
  bombs and IDX headers that claim too much;
- bad inputs with a one-line error: command lines and config files that used to end in a
  traceback, a silent success or a wrong result.

Usage::

    python benchmarks/trust.py [--out benchmarks/results/trust.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from forgetless.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent

#: test function -> row of the table
ROWS = {
    "test_kill_9_at_every_write_point_then_resume": "run killed (kill -9) at a write point",
    "test_ctrl_c_at_every_write_point_then_resume": "run stopped (Ctrl-C) at a write point",
    "test_a_resumed_run_killed_again_still_ends_the_same": "run killed twice (during its resume)",
    "test_a_sweep_killed_at_every_kind_of_write_point_then_run_again": "sweep killed at a kind of write point",
    "test_random_bytes_in_the_resume_checkpoint_are_detected": "damaged file detected",
    "test_a_damaged_result_is_an_error_naming_it_never_a_result": "damaged file detected",
    "test_damaged_config_events_and_weights_are_errors_naming_them": "damaged file detected",
    "test_reindex_rebuilds_every_status_from_the_folders": "damaged file detected",
    "test_the_tempfile_gadget_in_a_checkpoint_is_refused_and_deletes_nothing": "crafted file refused",
    "test_a_crafted_last_checkpoint_is_set_aside_for_the_intact_one_before": "crafted file refused",
    "test_unpack_rebuilds_only_classes_on_the_allow_list": "crafted file refused",
    "test_nesting_is_bounded_in_pack_unpack_flatten_and_unflatten": "crafted file refused",
    "test_deeply_nested_json_is_a_clear_error_everywhere_it_is_read": "crafted file refused",
    "test_deeply_nested_checkpoint_metadata_is_a_clear_error": "crafted file refused",
    "test_a_scenario_string_cannot_write_outside_the_store": "crafted file refused",
    "test_an_index_row_naming_a_folder_outside_the_store_is_never_read": "crafted file refused",
    "test_a_gzip_bomb_stops_at_the_size_its_header_states": "crafted file refused",
    "test_idx_headers_that_claim_too_much_are_refused_before_reading": "crafted file refused",
    "test_every_bad_input_is_a_one_line_error": "bad input with a one-line error",
    "test_inf_is_refused_where_a_finite_number_is_meant": "bad input with a one-line error",
    "test_resume_of_something_that_is_not_a_run_creates_nothing": "bad input with a one-line error",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/trust.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", "tests/test_faults.py", "tests/test_trust.py"],
            cwd=ROOT, check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )  # fmt: skip
        seconds = time.perf_counter() - start
        cases = ET.parse(report).getroot().iter("testcase")
        rows: dict[str, dict[str, int]] = defaultdict(lambda: {"passed": 0, "tried": 0})
        others = {"passed": 0, "tried": 0}
        failed = []
        for case in cases:
            name = case.get("name", "")
            function = re.sub(r"\[.*\]$", "", name)
            if case.find("skipped") is not None:
                continue
            row = rows[ROWS[function]] if function in ROWS else others
            row["tried"] += 1
            if case.find("failure") is None and case.find("error") is None:
                row["passed"] += 1
            else:
                failed.append(name)
    out = {
        "rows": dict(rows),
        "other_tests": others,
        "failed": failed,
        "seconds": round(seconds, 1),
        "note": "passed / tried test cases per row; each kill point is one case, resumed and "
        "compared with the uninterrupted run",
    }
    out["provenance"] = provenance()  # the forgetless version and git commit
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
