"""Property tests: arbitrary command streams never push any machine past its limits.

For every registered machine, hypothesis draws the stream's seed and mix (NaN/Inf, huge steps,
wrong and leg joint names, bursts, silences, e-stop toggling, clock jumps, pushed states);
robot_drivers.safety_fuzz checks position / velocity / acceleration limits, the watchdog latency,
the latched e-stop and the interlocks on every driver tick. `make bench-safety` runs the same with
a million commands.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.machine import available_machines, get_machine
from robot_drivers.safety import MotionLimiter
from robot_drivers.safety_fuzz import FuzzMix, fuzz_machine

MACHINES = available_machines()
mixes = st.builds(FuzzMix, invalid=st.floats(0, 0.5), huge=st.floats(0, 0.6), burst=st.floats(0, 0.3),
                  silence=st.floats(0, 0.2), estop=st.floats(0, 0.2), time_jump=st.floats(0, 0.2),
                  push=st.floats(0, 0.2))


def test_every_machine_class_is_fuzzed():
    classes = {get_machine(n).embodiment.machine_class for n in MACHINES}
    assert classes == {'arm', 'humanoid', 'excavator', 'wheel_loader', 'articulated_truck'}


@pytest.mark.parametrize('name', MACHINES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 31 - 1), mix=mixes)
def test_arbitrary_streams_keep_every_invariant(name, seed, mix):
    r = fuzz_machine(name, 100, seed=seed, mix=mix)
    assert r.violations == 0, r.examples
    assert r.watchdog_latency_ticks_max <= 1
    assert r.commands_tried >= 100            # a burst may end past the count


def test_the_checker_catches_a_limiter_without_acceleration_limits(monkeypatch):
    """The properties can fail: a limiter that forgets the acceleration bound is caught."""
    real = MotionLimiter.step

    def no_acc(self, targets, ref_pos, ref_vel, measured_pos, dt, ref_acc=None, stop_targets=None, jerk=True):
        saved = self.amax
        self.amax = np.full_like(saved, np.inf)
        try:
            return real(self, targets, ref_pos, ref_vel, measured_pos, dt, ref_acc, stop_targets, jerk)
        finally:
            self.amax = saved
    monkeypatch.setattr(MotionLimiter, 'step', no_acc)
    r = fuzz_machine('excavator_zx200', 300, seed=3)
    assert r.limit_violations > 0 and any('acceleration' in e for e in r.examples)


def test_the_checker_catches_an_estop_that_does_not_latch(monkeypatch):
    from robot_drivers.machine import MachineDriverCore
    monkeypatch.setattr(MachineDriverCore, 'estop', lambda self: [])   # an e-stop that latches nothing
    r = fuzz_machine('ur5e', 2000, seed=5, mix=FuzzMix(estop=0.3))
    assert r.estop_violations > 0
