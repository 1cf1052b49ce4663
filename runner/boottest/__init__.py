"""The boot test of every built ISO: QEMU boots it before anything is published.

- `policy.py` (pure): which tests a build gets (`plan_for`, from `[boot_test]` and the
  repository's `boot_test`), and what their results mean for it (`verdict`: fail the
  build, or only report; the commit status and release words).
- `step.py` (I/O): `BootStep` runs a plan with `sandbox.BootTester`, keeps the
  screenshots beside the build's artifacts and the results in the job store.
"""

from runner.boottest.policy import BootPlan, Verdict, plan_for, verdict
from runner.boottest.step import BootStep, BootTestStore

__all__ = ["BootPlan", "BootStep", "BootTestStore", "Verdict", "plan_for", "verdict"]
